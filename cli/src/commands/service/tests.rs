//! Unit tests of the service spec building (listings: commands::tasks and service::list).

use super::create::health_test;

#[test]
fn health_cmd_takes_shell_or_exec_form() {
    assert_eq!(
        health_test("curl -f localhost").unwrap(),
        ["CMD-SHELL", "curl -f localhost"]
    );
    assert_eq!(
        health_test(r#"["/echo","healthcheck"]"#).unwrap(),
        ["CMD", "/echo", "healthcheck"]
    );
    assert_eq!(health_test(r#"["CMD","/x"]"#).unwrap(), ["CMD", "/x"]);
    assert!(
        health_test("[nope")
            .unwrap_err()
            .to_string()
            .contains("JSON array")
    );
}
