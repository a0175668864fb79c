use std::path::PathBuf;

use shoal_api::pb::{PublishMode, RestartCondition, UpdateFailureAction};

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

fn load_files(files: &[PathBuf]) -> Result<Project, ComposeError> {
    load(files, &env, Options::default())
}

fn load_one(text: &str) -> Result<Project, ComposeError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "stack.yml", text);
    load_files(&[path])
}

/// Loads and converts `text` as the stack `app`.
fn stack_of(text: &str) -> convert::Stack {
    let project = load_one(text).unwrap_or_else(|e| panic!("{e}"));
    convert::convert(&project, "app").unwrap_or_else(|e| panic!("{e}"))
}

fn container(stack: &convert::Stack, service: &str) -> shoal_api::pb::ContainerSpec {
    stack
        .services
        .iter()
        .find(|s| s.name == format!("app_{service}"))
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.clone())
        .unwrap_or_else(|| panic!("no service {service}"))
}

#[test]
fn anchors_merge_keys_extensions_and_variables_resolve() {
    let project = load_one(
        "x-env: &env\n  A: \"1\"\nservices:\n  web:\n    image: shoal/echo:${TAG}\n    environment:\n      <<: *env\n      B: two\n    deploy:\n      replicas: ${REPLICAS}\n",
    )
    .unwrap();
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("shoal/echo:2"));
    assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(3));
    assert_eq!(web.environment.len(), 2);
    // As Docker prints it: the extension stays at the top level.
    assert!(project.to_yaml().contains("x-env"));
}

#[test]
fn ignored_keys_are_warned_about_with_their_place_in_docker_s_words() {
    let project = load_one(
        "version: \"3\"\nservices:\n  web:\n    image: x\n    build: .\n    expose: [80]\n    profiles: [debug]\n  db:\n    image: y\n    privileged: true\n",
    )
    .unwrap();
    let warnings = project.warnings.join("\n");
    assert!(
        warnings.contains("stack.yml:5:5: services.web.build: Ignoring unsupported options: build"),
        "{warnings}"
    );
    assert!(
        warnings.contains(
            "stack.yml:6:5: services.web.expose: Ignoring deprecated options: expose: Exposing ports is unnecessary"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains(
            "stack.yml:7:5: services.web.profiles: Ignoring unsupported options: profiles"
        ),
        "{warnings}"
    );
    assert!(warnings.contains("services.db.privileged"), "{warnings}");
    assert_eq!(project.warnings.len(), 4, "{warnings}");
}

#[test]
fn forbidden_keys_refuse_the_file_as_docker_does() {
    let error = load_one("services:\n  web:\n    image: x\n    extends:\n      service: y\n")
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(
            "stack.yml:4:5: services.web.extends: Compose file contains unsupported options: extends: Support for `extends` is not implemented yet."
        ),
        "{error}"
    );
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
            "expected a whole number, found \"two\"",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: -1\n",
            "stack.yml:5:17: services.web.deploy.replicas: ",
            "expected a whole number of 0 or more, found -1",
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
        // An unknown key inside a long entry names that key.
        (
            "services:\n  web:\n    image: x\n    volumes:\n      - type: volume\n        source: data\n        target: /data\n        nocopy: true\n",
            "stack.yml:8:9: services.web.volumes[0].nocopy: ",
            "unknown key `nocopy`",
        ),
        (
            "services:\n  web:\n    image: x\n    networks:\n      front:\n        alias: [w]\n",
            "stack.yml:6:9: services.web.networks.front.alias: ",
            "unknown key `alias`",
        ),
        // Numbers out of range say so.
        (
            "services:\n  web:\n    image: x\n    ports:\n      - target: 70000\n",
            "services.web.ports[0].target: ",
            "port 70000 is out of range: ports are 0 to 65535",
        ),
        (
            "services:\n  web:\n    image: x\n    secrets:\n      - source: s\n        mode: 99999\n",
            "services.web.secrets[0].mode: ",
            "file mode 99999 is out of range",
        ),
        (
            "services:\n  web:\n    image: x\n    volumes:\n      - \":/media\"\n",
            "stack.yml:5:9: services.web.volumes[0]: ",
            "invalid spec: :/media: empty section between colons",
        ),
        (
            "- a\n- b\n",
            "stack.yml:1:1: ",
            "top-level object must be a mapping",
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
fn later_files_merge_by_docker_s_rules() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        &dir,
        "base.yml",
        "services:\n  web:\n    image: shoal/echo:1\n    ports: [\"80:80\", \"81:81\"]\n    environment: [A=1, B=2]\n    labels: {x: \"1\"}\n    volumes: [\"data:/d\"]\n    dns: [1.1.1.1]\n    command: [a, b]\n    deploy:\n      replicas: 2\n    networks:\n      front:\n        aliases: [w]\nnetworks:\n  front:\n    attachable: true\nvolumes:\n  data:\n",
    );
    let over = write(
        &dir,
        "prod.yml",
        "services:\n  web:\n    image: shoal/echo:2\n    ports: [{target: 82, published: 80}, \"443:443\"]\n    environment: [B=3]\n    labels: [y=2]\n    volumes: [\"./local:/d\"]\n    dns: 8.8.8.8\n    command: c\n  db:\n    image: y\nnetworks:\n  front:\n    labels: [team=a]\n",
    );
    let project = load_files(&[base, over]).unwrap();
    let web = &project.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("shoal/echo:2"));
    let ports: Vec<(u32, u32)> = web.ports.iter().map(|p| (p.published, p.target)).collect();
    assert_eq!(ports, [(80, 82), (81, 81), (443, 443)]);
    let env: Vec<String> = web
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(env, ["A=1", "B=3"]);
    assert_eq!(web.labels.len(), 2);
    // One mount on /d: the override's bind replaced the named volume.
    assert_eq!(web.volumes.len(), 1);
    assert_eq!(web.volumes[0].kind, "bind");
    assert_eq!(web.dns, ["1.1.1.1", "8.8.8.8"]);
    assert_eq!(web.command.as_deref(), Some(&["c".to_owned()][..]));
    assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(2));
    assert!(project.file.services.contains_key("db"));
    // A top-level network named again is the later file's, whole.
    let front = &project.file.networks["front"];
    assert!(!front.attachable);
    assert_eq!(front.labels["team"], "a");
}

#[test]
fn an_error_in_an_override_points_at_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(&dir, "base.yml", "services:\n  web:\n    image: x\n");
    let over = write(
        &dir,
        "over.yml",
        "services:\n  web:\n    deploy:\n      replicas: many\n",
    );
    let error = load_files(&[base, over]).err().unwrap().to_string();
    assert!(
        error.contains("over.yml:4:17: services.web.deploy.replicas"),
        "{error}"
    );
}

#[test]
fn env_files_are_verbatim_and_folded_into_environment() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "app.env", "Q=\"quoted\"\nPLAIN=x\nOVER=file\n");
    let path = write(
        &dir,
        "stack.yml",
        "services:\n  web:\n    image: x\n    env_file: app.env\n    environment:\n      OVER: env\n",
    );
    let project = load_files(&[path]).unwrap();
    let stack = convert::convert(&project, "app").unwrap();
    assert_eq!(
        container(&stack, "web").env,
        ["OVER=env", "PLAIN=x", "Q=\"quoted\""]
    );
    let printed = project.to_yaml();
    assert!(printed.contains("Q: '\"quoted\"'"), "{printed}");
}

#[test]
fn a_byte_order_mark_and_several_documents_are_read_as_docker_reads_them() {
    let project =
        load_one("\u{feff}services:\n  web:\n    image: x\n---\nservices:\n  db:\n    image: y\n")
            .unwrap();
    assert_eq!(project.file.services.keys().collect::<Vec<_>>(), ["web"]);
}

#[test]
fn unset_variables_in_short_syntax_behave_as_in_docker() {
    // `${P}:5601` publishes on a port the cluster picks.
    let stack = stack_of("services:\n  web:\n    image: x\n    ports: [\"${P}:5601\"]\n");
    let ports = &stack.services[0].endpoint.as_ref().unwrap().ports;
    assert_eq!((ports[0].published_port, ports[0].target_port), (0, 5601));
    // `${D}:/media` is an error, not an anonymous volume.
    let error = load_one("services:\n  web:\n    image: x\n    volumes: [\"${D}:/media\"]\n")
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("empty section between colons"), "{error}");
}

#[test]
fn host_addresses_are_warned_about_and_dropped() {
    let project =
        load_one("services:\n  web:\n    image: x\n    ports:\n      - 127.0.0.1:8080:80\n")
            .unwrap();
    assert!(
        project.warnings.iter().any(|w| w.contains(
            "stack.yml:5:9: services.web.ports[0]: ignoring IP-address (127.0.0.1:8080:80/tcp) service will listen on '0.0.0.0'"
        )),
        "{:?}",
        project.warnings
    );
    let stack = convert::convert(&project, "app").unwrap();
    let port = &stack.services[0].endpoint.as_ref().unwrap().ports[0];
    assert_eq!((port.published_port, port.target_port), (8080, 80));
}

#[test]
fn stack_objects_are_named_and_labelled_like_docker_s() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "pw.txt", "hunter2");
    write(&dir, "unused.txt", "x");
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
      - data:/data:nocopy
      - ./conf:/conf:ro
      - /:/host:ro,rslave
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
    restart: on-failure:3
networks:
  front:
    labels: [tier=front]
volumes:
  data:
    labels: {kept: \"yes\"}
    driver_opts: {type: tmpfs, device: tmpfs}
secrets:
  pw:
    file: ./pw.txt
  unused:
    file: ./unused.txt
",
    );
    let project = load_files(&[path]).unwrap();
    let stack = convert::convert(&project, "app").unwrap();
    let names: Vec<&str> = stack.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["app_default", "app_front"]);
    assert_eq!(stack.networks[1].labels["tier"], "front");
    assert_eq!(stack.networks[1].labels[convert::STACK_LABEL], "app");
    // Every declared secret is created, used or not, as Docker does.
    let secrets: Vec<&str> = stack.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secrets, ["app_pw", "app_unused"]);
    assert_eq!(stack.secrets[0].data.as_deref(), Some(&b"hunter2"[..]));
    let web = stack.services.iter().find(|s| s.name == "app_web").unwrap();
    assert_eq!(web.labels[convert::STACK_LABEL], "app");
    assert_eq!(web.labels[convert::IMAGE_LABEL], "shoal/echo:1");
    let task = web.task.as_ref().unwrap();
    let container = task.container.as_ref().unwrap();
    assert_eq!(container.args, ["serve", "--port", "80", "a b"]);
    let data = &container.mounts[0];
    assert_eq!(data.source, "app_data");
    assert_eq!(data.options["volume-nocopy"], "true");
    assert_eq!(data.volume_labels["kept"], "yes");
    assert_eq!(data.volume_labels[convert::STACK_LABEL], "app");
    assert_eq!(data.volume_driver_opts["type"], "tmpfs");
    assert_eq!(container.mounts[1].r#type, "bind");
    assert!(container.mounts[1].source.ends_with("/conf") && container.mounts[1].read_only);
    assert_eq!(container.mounts[2].options["bind-propagation"], "rslave");
    let secret = &container.secrets[0];
    assert_eq!(secret.secret_name, "app_pw");
    assert_eq!(secret.file.as_ref().unwrap().name, "db_password");
    assert_eq!(secret.file.as_ref().unwrap().mode, 0o400);
    assert_eq!(task.networks[0].target, "app_front");
    assert_eq!(task.networks[0].aliases, ["www"]);
    let ports = &web.endpoint.as_ref().unwrap().ports;
    assert_eq!(ports.len(), 4);
    assert_eq!(
        (ports[0].published_port, ports[0].protocol.as_str()),
        (5353, "udp")
    );
    assert_eq!(ports[0].publish_mode(), PublishMode::Host);
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
    assert_eq!(update.failure_action(), UpdateFailureAction::Rollback);
    let db = stack.services.iter().find(|s| s.name == "app_db").unwrap();
    let db_task = db.task.as_ref().unwrap();
    assert_eq!(db_task.networks[0].target, "app_default");
    assert_eq!(db.replicas, 1);
    // `restart:` is the restart policy when deploy gives none, as in Docker.
    let restart = db_task.restart.unwrap();
    assert_eq!(
        (restart.condition(), restart.max_attempts),
        (RestartCondition::OnFailure, 3)
    );
}

#[test]
fn engine_keys_reach_the_container_spec() {
    let stack = stack_of(
        "services:
  web:
    image: x
    init: true
    tty: true
    stdin_open: true
    read_only: true
    domainname: example.org
    stop_signal: SIGQUIT
    stop_grace_period: 1m30s
    oom_score_adj: -100
    pids_limit: 50
    extra_hosts: [\"db:10.0.0.2\", \"cache=10.0.0.3\"]
    sysctls: {net.core.somaxconn: 1024}
    dns: 8.8.8.8
    dns_search: [example.org]
    dns_opt: [use-vc]
    cap_add: [net_admin]
    cap_drop: [MKNOD]
    ulimits:
      nproc: 512
      nofile: {soft: 1024, hard: 2048}
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: 3}
    healthcheck:
      test: curl -f http://localhost
      start_interval: 2s
    deploy:
      resources:
        reservations:
          generic_resources:
            - discrete_resource_spec: {kind: gpu, value: 2}
",
    );
    let c = container(&stack, "web");
    assert_eq!(c.init, Some(true));
    assert!(c.tty && c.open_stdin && c.read_only);
    assert_eq!(c.domainname, "example.org");
    assert_eq!(c.stop_signal, "SIGQUIT");
    assert_eq!(c.stop_grace_period_ms, Some(90_000));
    assert_eq!(c.oom_score_adj, Some(-100));
    assert_eq!(c.hosts, ["10.0.0.2 db", "10.0.0.3 cache"]);
    assert_eq!(c.sysctls["net.core.somaxconn"], "1024");
    let dns = c.dns_config.unwrap();
    assert_eq!(
        (dns.nameservers, dns.search, dns.options),
        (
            vec!["8.8.8.8".to_owned()],
            vec!["example.org".to_owned()],
            vec!["use-vc".to_owned()]
        )
    );
    assert_eq!(c.capability_add, ["CAP_NET_ADMIN"]);
    assert_eq!(c.capability_drop, ["CAP_MKNOD"]);
    let ulimits: Vec<(String, i64, i64)> = c
        .ulimits
        .iter()
        .map(|u| (u.name.clone(), u.soft, u.hard))
        .collect();
    assert_eq!(
        ulimits,
        [
            ("nofile".to_owned(), 1024, 2048),
            ("nproc".to_owned(), 512, 512)
        ]
    );
    assert_eq!(
        c.healthcheck.unwrap().test,
        ["CMD-SHELL", "curl -f http://localhost"]
    );
    let task = stack.services[0].task.as_ref().unwrap();
    let log = task.log_driver.as_ref().unwrap();
    assert_eq!(
        (log.name.as_str(), log.options["max-file"].as_str()),
        ("json-file", "3")
    );
    let resources = task.resources.as_ref().unwrap();
    assert_eq!(resources.limits.unwrap().pids, 50);
    assert_eq!(resources.generic_reservations[0].kind, "gpu");
}

#[test]
fn undeclared_references_are_errors_at_their_use() {
    let error = load_one("services:\n  web:\n    image: x\n    secrets: [nope]\n")
        .and_then(|p| convert::convert(&p, "s"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("stack.yml:4:") && error.contains("undefined secret \"nope\""),
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
            let project = load_files(std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{e}"));
            convert::convert(&project, "t").unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 8, "{seen} example stacks");
}

#[test]
fn swarm_templates_reach_the_spec_as_written_for_the_agent_to_expand() {
    let stack = stack_of(
        "services:\n  web:\n    image: shoal/echo:1\n    hostname: \"{{.Service.Name}}-{{.Task.Slot}}\"\n    environment:\n      NODE_ID: \"{{.Node.ID}}\"\n    volumes:\n      - type: bind\n        source: /srv/{{.Task.Slot}}\n        target: /data\n",
    );
    let container = container(&stack, "web");
    assert_eq!(container.hostname, "{{.Service.Name}}-{{.Task.Slot}}");
    assert!(container.env.contains(&"NODE_ID={{.Node.ID}}".to_owned()));
    assert_eq!(container.mounts[0].source, "/srv/{{.Task.Slot}}");
}

#[test]
fn deploy_mode_takes_jobs_as_docker_s_stack_deploy_does() {
    let spec = |text: &str| {
        load_one(text)
            .and_then(|p| convert::convert(&p, "s"))
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
            && error.contains("replicas can only be used with replicated or replicated-job mode"),
        "{error}"
    );
    let error = spec("services:\n  setup:\n    image: x\n    deploy:\n      mode: cron\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("stack.yml:5:") && error.contains("Unknown mode: cron"),
        "{error}"
    );
}

#[test]
fn hostile_files_are_refused_quickly_with_what_is_wrong() {
    let started = std::time::Instant::now();
    let deep = format!("services: {}", "[".repeat(40_000));
    let error = load_one(&deep).err().unwrap().to_string();
    assert!(error.contains("nest deeper than 100 levels"), "{error}");
    let mut laughs = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        laughs.push_str(&format!("x-a{level}: &a{level} [{refs}]\n"));
    }
    laughs.push_str("services:\n  web:\n    image: x\n");
    let error = load_one(&laughs).err().unwrap().to_string();
    assert!(error.contains("billion laughs"), "{error}");
    let nested = format!(
        "services:\n  web:\n    image: x\n    environment:\n      A: \"{}x{}\"\n",
        "${A:-".repeat(5_000),
        "}".repeat(5_000)
    );
    assert!(load_one(&nested).is_ok());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn template_drivers_are_passed_on_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "app.tmpl", "name={{.Service.Name}}\n");
    let path = write(
        &dir,
        "stack.yml",
        "services:\n  web:\n    image: x\n    configs: [app]\nconfigs:\n  app:\n    file: ./app.tmpl\n    template_driver: golang\n",
    );
    let project = load_files(std::slice::from_ref(&path)).unwrap();
    let stack = convert::convert(&project, "s").unwrap();
    assert_eq!(stack.configs[0].template_driver, "golang");
    let bad = write(
        &dir,
        "bad.yml",
        "services:\n  web:\n    image: x\nconfigs:\n  app:\n    file: ./app.tmpl\n    template_driver: jinja\n",
    );
    let error = load_files(&[bad])
        .and_then(|p| convert::convert(&p, "s"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("template driver \"jinja\""), "{error}");
}

/// Found while fuzzing the loader: `env_file: /dev/zero` (or a secret's
/// `file:`) made the client read until the kernel killed it.
#[test]
fn endless_files_it_names_are_refused_with_their_place() {
    let err = load_one("services:\n  web:\n    image: x\n    env_file: /dev/zero\n")
        .err()
        .expect("refused");
    assert_eq!(err.path, "services.web.env_file[0]");
    assert!(err.message.ends_with("larger than 16 MiB"), "{err}");

    let project = load_one(
        "services:\n  web:\n    image: x\n    secrets: [s]\nsecrets:\n  s:\n    file: /dev/zero\n",
    )
    .unwrap();
    let Err(err) = convert::convert(&project, "app") else {
        panic!("a secret read from /dev/zero was accepted");
    };
    assert_eq!(err.path, "secrets.s.file");
    assert!(err.message.ends_with("larger than 16 MiB"), "{err}");
}
