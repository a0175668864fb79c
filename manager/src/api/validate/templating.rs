//! A secret's or config's template driver and templated content, checked
//! when it is created: `golang` is the one driver, and its content must
//! parse (placeholders known, `env`/`secret`/`config` called with a quoted
//! name), so that a mistake is refused at once rather than failing every
//! task that mounts it.

use shoal_api::template::payload;

use super::{Check, invalid};

pub fn check(kind: &str, name: &str, driver: &str, data: &[u8]) -> Check {
    if let Err(why) = payload::check_driver(driver) {
        return invalid!("{kind} {name}: {why}");
    }
    if driver.is_empty() {
        return Ok(());
    }
    if let Err(why) = payload::check(data) {
        return invalid!("{kind} {name}: invalid template: {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_and_templates_are_checked() {
        assert!(check("config", "c", "", b"{{ not a template").is_ok());
        assert!(check("config", "c", "golang", b"name={{.Service.Name}}").is_ok());
        assert!(check("secret", "s", "golang", b"{{env \"HOME\"}}").is_ok());
        let err = check("config", "c", "jinja", b"x").unwrap_err();
        assert_eq!(
            err.0,
            "config c: unknown template driver \"jinja\": the only one is golang"
        );
        let err = check("config", "c", "golang", b"{{.Bogus}}").unwrap_err();
        assert_eq!(
            err.0,
            "config c: invalid template: unknown placeholder .Bogus"
        );
    }
}
