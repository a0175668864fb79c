use std::path::PathBuf;

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(name: &str) -> Option<String> {
    match name {
        "TAG" => Some("2".into()),
        "REPLICAS" => Some("3".into()),
        _ => None,
    }
}

fn load_one(text: &str) -> Result<Project, ComposeError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "stack.yml", text);
    load(&[path], &env)
}

#[test]
fn anchors_merge_keys_extensions_and_variables_resolve() {
    let project = load_one(
        "x-env: &env\n  A: \"1\"\nservices:\n  web:\n    image: shoal/echo:${TAG}\n    environment:\n      <<: *env\n      B: two\n    deploy:\n      replicas: ${REPLICAS}\n",
    )
    .unwrap();
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("shoal/echo:2"));
    assert_eq!(web.deploy.as_ref().unwrap().replicas.unwrap().0, 3);
    let Some(model::KeyValues::Map(env)) = &web.environment else {
        panic!("environment is a map")
    };
    assert_eq!(env.len(), 2);
    assert!(!project.to_yaml().contains("x-env"));
}

#[test]
fn ignored_keys_are_warned_about_with_their_place() {
    let project = load_one(
        "version: \"3\"\nservices:\n  web:\n    image: x\n    build: .\n    depends_on: [db]\n  db:\n    image: y\n    restart: always\n",
    )
    .unwrap();
    assert_eq!(project.warnings.len(), 3, "{:?}", project.warnings);
    assert!(
        project.warnings[0].contains("stack.yml:5:5: ignoring services.web.build"),
        "{:?}",
        project.warnings
    );
    assert!(project.file.services["web"].image.is_some());
}

#[test]
fn broken_files_name_file_line_column_and_key() {
    let cases = [
        (
            "services:\n  web:\n\timage: x\n",
            "stack.yml:3:1: ",
            "cannot start any token",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: two\n",
            "stack.yml:5:17: services.web.deploy.replicas: ",
            "expected an integer, found \"two\"",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      replica: 2\n",
            "stack.yml:5:7: services.web.deploy.replica: ",
            "unknown key `replica`",
        ),
        (
            "services:\n  web:\n    image: x\n    environment:\n      PASSWORD: ${DB_PASSWORD:?set DB_PASSWORD}\n",
            "stack.yml:5:17: services.web.environment.PASSWORD: ",
            "required variable DB_PASSWORD is missing a value: set DB_PASSWORD",
        ),
    ];
    for (text, place, message) in cases {
        let error = load_one(text).err().expect(text).to_string();
        assert!(error.contains(place), "{error:?} should contain {place:?}");
        assert!(
            error.contains(message),
            "{error:?} should contain {message:?}"
        );
    }
}

#[test]
fn later_files_override_and_extend_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        &dir,
        "base.yml",
        "services:\n  web:\n    image: shoal/echo:1\n    ports: [\"80:80\"]\n    deploy:\n      replicas: 2\n",
    );
    let over = write(
        &dir,
        "prod.yml",
        "services:\n  web:\n    image: shoal/echo:2\n    ports: [\"443:443\"]\n  db:\n    image: y\n",
    );
    let project = load(&[base, over], &env).unwrap();
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("shoal/echo:2"));
    assert_eq!(web.ports.len(), 2);
    assert_eq!(web.deploy.as_ref().unwrap().replicas.unwrap().0, 2);
    assert!(project.file.services.contains_key("db"));
}

#[test]
fn a_type_error_in_an_override_points_at_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(&dir, "base.yml", "services:\n  web:\n    image: x\n");
    let over = write(
        &dir,
        "over.yml",
        "services:\n  web:\n    deploy:\n      replicas: many\n",
    );
    let error = load(&[base, over], &env).err().unwrap().to_string();
    assert!(
        error.contains("over.yml:4:17: services.web.deploy.replicas"),
        "{error}"
    );
}

#[test]
fn stack_objects_are_named_and_labelled_like_docker_s() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "pw.txt", "hunter2");
    let path = write(
        &dir,
        "stack.yml",
        "services:
  web:
    image: shoal/echo:1
    command: serve --port 80 \"a b\"
    ports:
      - \"8080:80\"
      - target: 53
        published: 5353
        protocol: udp
        mode: host
      - \"9000-9001:9000-9001\"
    volumes:
      - data:/data
      - ./conf:/conf:ro
    secrets:
      - source: pw
        target: db_password
        mode: 0400
    networks:
      front:
        aliases: [www]
    deploy:
      replicas: 2
      placement:
        constraints: [node.role != manager]
        preferences:
          - spread: node.labels.zone
      resources:
        limits: {cpus: \"0.5\", memory: 100M}
      update_config:
        parallelism: 2
        delay: 2s
        failure_action: rollback
        order: start-first
  db:
    image: shoal/echo:1
networks:
  front:
volumes:
  data:
secrets:
  pw:
    file: ./pw.txt
",
    );
    let project = load(&[path], &env).unwrap();
    let stack = convert::convert(&project, "app", &env).unwrap();
    let names: Vec<&str> = stack.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["app_default", "app_front"]);
    assert_eq!(stack.secrets[0].name, "app_pw");
    assert_eq!(stack.secrets[0].data.as_deref(), Some(&b"hunter2"[..]));
    let web = stack.services.iter().find(|s| s.name == "app_web").unwrap();
    assert_eq!(web.labels[convert::STACK_LABEL], "app");
    let task = web.task.as_ref().unwrap();
    let container = task.container.as_ref().unwrap();
    assert_eq!(container.args, ["serve", "--port", "80", "a b"]);
    assert_eq!(container.mounts[0].source, "app_data");
    assert_eq!(container.mounts[1].r#type, "bind");
    assert!(container.mounts[1].source.ends_with("/conf") && container.mounts[1].read_only);
    let secret = &container.secrets[0];
    assert_eq!(secret.secret_name, "app_pw");
    assert_eq!(secret.file.as_ref().unwrap().name, "db_password");
    assert_eq!(secret.file.as_ref().unwrap().mode, 0o400);
    assert_eq!(task.networks[0].target, "app_front");
    assert_eq!(task.networks[0].aliases, ["www"]);
    let ports = &web.endpoint.as_ref().unwrap().ports;
    assert_eq!(ports.len(), 4);
    assert_eq!(
        (ports[1].published_port, ports[1].protocol.as_str()),
        (5353, "udp")
    );
    assert_eq!(ports[1].publish_mode(), shoal_api::pb::PublishMode::Host);
    assert_eq!(ports[3].published_port, 9001);
    assert_eq!(
        task.resources
            .as_ref()
            .unwrap()
            .limits
            .unwrap()
            .memory_bytes,
        100 << 20
    );
    let update = web.update.unwrap();
    assert_eq!((update.parallelism, update.delay_ms), (Some(2), 2000));
    assert_eq!(
        update.failure_action(),
        shoal_api::pb::UpdateFailureAction::Rollback
    );
    let db = stack.services.iter().find(|s| s.name == "app_db").unwrap();
    assert_eq!(db.task.as_ref().unwrap().networks[0].target, "app_default");
    assert_eq!(db.replicas, 1);
}

#[test]
fn undeclared_references_are_errors_at_their_use() {
    let error = load_one("services:\n  web:\n    image: x\n    secrets: [nope]\n")
        .and_then(|p| convert::convert(&p, "s", &env))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("stack.yml:4:") && error.contains("not declared"),
        "{error}"
    );
}

#[test]
fn every_example_stack_loads_and_converts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/stacks");
    let entries = std::fs::read_dir(&dir).unwrap();
    let mut seen = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml")
            && path.file_name().unwrap() != "registry-config.yml"
        {
            let project = load(std::slice::from_ref(&path), &env).unwrap_or_else(|e| panic!("{e}"));
            convert::convert(&project, "t", &env).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 8, "{seen} example stacks");
}

#[test]
fn swarm_templates_reach_the_spec_as_written_for_the_agent_to_expand() {
    let project = load_one(
        "services:\n  web:\n    image: shoal/echo:1\n    hostname: \"{{.Service.Name}}-{{.Task.Slot}}\"\n    environment:\n      NODE_ID: \"{{.Node.ID}}\"\n    volumes:\n      - type: bind\n        source: /srv/{{.Task.Slot}}\n        target: /data\n",
    )
    .unwrap();
    let stack = convert::convert(&project, "app", &env).unwrap();
    let container = stack.services[0]
        .task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .unwrap();
    assert_eq!(container.hostname, "{{.Service.Name}}-{{.Task.Slot}}");
    assert!(container.env.contains(&"NODE_ID={{.Node.ID}}".to_owned()));
    assert_eq!(container.mounts[0].source, "/srv/{{.Task.Slot}}");
}

#[test]
fn deploy_mode_takes_jobs_as_docker_s_stack_deploy_does() {
    let spec = |text: &str| {
        load_one(text)
            .and_then(|p| convert::convert(&p, "s", &env))
            .map(|stack| stack.services[0].clone())
    };
    let job = spec("services:\n  batch:\n    image: x\n    deploy:\n      mode: replicated-job\n      replicas: 5\n").unwrap();
    assert_eq!(
        (job.mode(), job.replicas, job.max_concurrent),
        (shoal_api::pb::ServiceMode::ReplicatedJob, 5, Some(5)),
        "a replicated job runs its replicas all at once"
    );
    let job = spec("services:\n  batch:\n    image: x\n    deploy:\n      mode: replicated-job\n")
        .unwrap();
    assert_eq!((job.replicas, job.max_concurrent), (1, Some(1)));
    let job =
        spec("services:\n  setup:\n    image: x\n    deploy:\n      mode: global-job\n").unwrap();
    assert_eq!(
        (job.mode(), job.replicas, job.max_concurrent),
        (shoal_api::pb::ServiceMode::GlobalJob, 0, None)
    );
    let error = spec("services:\n  setup:\n    image: x\n    deploy:\n      mode: global-job\n      replicas: 2\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("stack.yml:6:")
            && error.contains("replicas can only be used with mode: replicated or replicated-job"),
        "{error}"
    );
    let error = spec("services:\n  setup:\n    image: x\n    deploy:\n      mode: cron\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("stack.yml:5:")
            && error.contains("expected replicated, global, replicated-job or global-job"),
        "{error}"
    );
}
