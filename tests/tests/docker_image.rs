//! The Docker deployment, on a machine without Docker: the binaries started the way
//! `Dockerfile` and `docker-compose.yml` start them, read from those files.
//!
//! What "the way the image and compose start them" means here, and what differs:
//!
//! * **A root of the image's filesystem.** A fresh temporary directory stands in for
//!   the container's `/`. The Dockerfile's final stage is replayed into it: its
//!   `mkdir -p` directories are made and its `chown` applied; the binaries are copied
//!   to `usr/local/bin/` (its `COPY`). Every absolute path the two files name is
//!   taken inside that root ([`ImageRoot::host_path`]): the image's data directory
//!   `/var/lib/growth` is `ROOT/var/lib/growth`. That is the one substitution of
//!   paths, done alike for `WORKDIR`, `ENV` values, `VOLUME` and the compose file's
//!   volume mounts.
//! * **The image's user.** When the test runs as root, the binaries and the health
//!   checks run as the Dockerfile's `USER` (with `setpriv`, which execs, so a SIGKILL
//!   reaches the binary itself); otherwise they run as the (already unprivileged) test
//!   user and the `chown` is skipped.
//! * **The environment.** Cleared, then `PATH` (Debian's, with the root's
//!   `usr/local/bin` for `/usr/local/bin`), then the Dockerfile's `ENV`, then the
//!   service's `environment` from the compose file after compose's interpolation
//!   (`${VAR:?message}`, `${VAR:-default}`, ...) with the variables an operator
//!   exports (here only `GROWTH_USER_HASH_KEY`). Then, because there is no Docker
//!   network: the ClickHouse service URL (`http://clickhouse:8123`) becomes the test
//!   ClickHouse (`GROWTH_TEST_CLICKHOUSE_URL`), every `0.0.0.0:PORT` listen address a
//!   free `127.0.0.1` port (health check URLs follow), and the ClickHouse user and
//!   password the compose file gives (`growth`, which the ClickHouse image creates)
//!   are dropped, as the embedded test ClickHouse has only its default user. One
//!   variable is added: `GROWTH_CLICKHOUSE_DATABASE`, a database of the test's own in
//!   the ClickHouse every test shares (the compose stack has its ClickHouse to itself
//!   and uses the default `growth`).
//! * **Volumes.** A named volume is a directory that outlives the container: a
//!   restart here is a new root (a new container) into which the previous root's
//!   volume directories are moved, at the compose file's mount paths.

mod faults;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use faults::load::{self, Load};
use growth_e2e::{
    Running, binary, clickhouse, clickhouse_url, eventually, free_port, repo_root, unique_database,
};
use growth_schema::user_hash::UserHasher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_norway::Value as Yaml;

/// The image's data directory: its working directory, owned by its user, holding the
/// collector's spool and the aggregator's state (as volumes).
const IMAGE_DATA_DIR: &str = "/var/lib/growth";
/// Where the image's binaries are.
const IMAGE_BIN_DIR: &str = "/usr/local/bin";
/// Debian's PATH, which the image inherits from `debian:bookworm-slim`.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The user the image runs as.
const IMAGE_USER: &str = "nobody";
/// The ClickHouse of the compose stack, as the other services reach it.
const COMPOSE_CLICKHOUSE_URL: &str = "http://clickhouse:8123";
/// The binaries' services in the compose file.
const SERVICES: [&str; 2] = ["collector", "aggregator"];
/// What the operator exports before `docker compose up` (here: a test key).
const KEY: &str = "docker-image-test-user-hash-key";

// ---------------------------------------------------------------------------------
// The Dockerfile.

/// The final stage of the Dockerfile, as far as running it goes.
#[derive(Debug, Default)]
struct Dockerfile {
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
    volumes: Vec<String>,
    /// `mkdir` arguments of `RUN` lines (flags left out).
    mkdirs: Vec<String>,
    /// `chown` of `RUN` lines: owner (`user[:group]`) and paths.
    chowns: Vec<(String, Vec<String>)>,
    /// The packages `apt-get install` installs.
    packages: Vec<String>,
    /// `COPY` destinations.
    copied_to: Vec<String>,
}

impl Dockerfile {
    fn read() -> Self {
        let path = repo_root().join("Dockerfile");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::parse(&text)
    }

    fn parse(text: &str) -> Self {
        let mut stage = Self::default();
        for line in logical_lines(text) {
            let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let rest = rest.trim();
            match instruction.to_ascii_uppercase().as_str() {
                "FROM" => stage = Self::default(),
                "ENV" => stage.env.extend(parse_env(rest)),
                "WORKDIR" => stage.workdir = Some(rest.to_owned()),
                "USER" => stage.user = Some(rest.to_owned()),
                "VOLUME" => stage.volumes.extend(words_or_json(rest)),
                "COPY" => stage.copied_to.extend(words_or_json(rest).last().cloned()),
                "RUN" => stage.run(rest),
                _ => {}
            }
        }
        stage
    }

    fn run(&mut self, script: &str) {
        for command in script.split("&&").flat_map(|c| c.split(';')) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let args = || words.iter().skip(1).filter(|w| !w.starts_with('-'));
            match words.first().copied() {
                Some("mkdir") => self.mkdirs.extend(args().map(|w| w.to_string())),
                Some("chown") => {
                    let mut args = args();
                    if let Some(owner) = args.next() {
                        let paths = args.map(|w| w.to_string()).collect();
                        self.chowns.push((owner.to_string(), paths));
                    }
                }
                Some("apt-get") if words.get(1) == Some(&"install") => self.packages.extend(
                    words
                        .iter()
                        .skip(2)
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                ),
                _ => {}
            }
        }
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        lines.push(current);
    }
    lines
}

/// `ENV K=V K2="V 2"` or the legacy `ENV K V`.
fn parse_env(rest: &str) -> Vec<(String, String)> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return vec![(k.to_owned(), v.trim().to_owned())];
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return pairs;
        }
        let mut value = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c == '"' {
                quoted = !quoted;
            } else if c.is_whitespace() && !quoted {
                break;
            } else {
                value.push(c);
            }
            chars.next();
        }
        pairs.push((key, value));
    }
}

/// A JSON array (`["/a", "/b"]`) or words.
fn words_or_json(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        serde_json::from_str(rest).unwrap_or_else(|e| panic!("{rest}: {e}"))
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    }
}

// ---------------------------------------------------------------------------------
// The compose file.

/// One service of the compose file.
#[derive(Debug, Default)]
struct Service {
    build: Option<String>,
    command: Vec<String>,
    /// As written, before interpolation.
    environment: Vec<(String, String)>,
    /// `source:target` mounts (`:ro` and the like left out).
    volumes: Vec<(String, String)>,
    healthcheck: Vec<String>,
    /// Service name → condition.
    depends_on: BTreeMap<String, String>,
    user: Option<String>,
    working_dir: Option<String>,
}

#[derive(Debug)]
struct Compose {
    services: BTreeMap<String, Service>,
    /// The named volumes the file declares.
    volumes: Vec<String>,
}

impl Compose {
    fn read() -> Self {
        let path = repo_root().join("docker-compose.yml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let yaml: Yaml =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let services = yaml["services"]
            .as_mapping()
            .expect("services")
            .iter()
            .map(|(name, s)| (scalar(name), Service::parse(s)))
            .collect();
        let volumes = yaml["volumes"]
            .as_mapping()
            .map(|m| m.keys().map(scalar).collect())
            .unwrap_or_default();
        Self { services, volumes }
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("no service {name} in docker-compose.yml"))
    }
}

impl Service {
    fn parse(yaml: &Yaml) -> Self {
        let list = |v: &Yaml| -> Vec<String> {
            match v {
                Yaml::Sequence(items) => items.iter().map(scalar).collect(),
                Yaml::Null => Vec::new(),
                other => vec![scalar(other)],
            }
        };
        let environment = match &yaml["environment"] {
            Yaml::Mapping(m) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
            Yaml::Sequence(items) => items
                .iter()
                .map(|i| {
                    let i = scalar(i);
                    let (k, v) = i.split_once('=').unwrap_or((&i, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            _ => Vec::new(),
        };
        let volumes = list(&yaml["volumes"])
            .iter()
            .map(|v| {
                let mut parts = v.split(':');
                let source = parts.next().unwrap_or("").to_owned();
                let target = parts.next().unwrap_or("").to_owned();
                (source, target)
            })
            .collect();
        let depends_on = match &yaml["depends_on"] {
            Yaml::Sequence(items) => items
                .iter()
                .map(|i| (scalar(i), "service_started".to_owned()))
                .collect(),
            Yaml::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    let condition = v["condition"].as_str().unwrap_or("service_started");
                    (scalar(k), condition.to_owned())
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let build = match &yaml["build"] {
            Yaml::Null => None,
            Yaml::Mapping(m) => m.get("context").map(scalar).filter(|_| {
                m.get("dockerfile")
                    .is_none_or(|d| scalar(d) == "Dockerfile")
            }),
            other => Some(scalar(other)),
        };
        Self {
            build,
            command: list(&yaml["command"]),
            environment,
            volumes,
            healthcheck: list(&yaml["healthcheck"]["test"]),
            depends_on,
            user: yaml["user"].as_str().map(str::to_owned),
            working_dir: yaml["working_dir"].as_str().map(str::to_owned),
        }
    }

    /// The environment compose gives the container: interpolated with `vars` (what the
    /// operator exported), over the image's `ENV`.
    fn container_env(
        &self,
        image: &Dockerfile,
        vars: &BTreeMap<&str, &str>,
    ) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = image.env.clone();
        for (k, v) in &self.environment {
            let v = interpolate(v, vars)?;
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v));
        }
        Ok(env)
    }
}

/// A YAML scalar as compose reads it (numbers and booleans as their text).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("not a scalar in docker-compose.yml: {other:?}"),
    }
}

/// Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?message}`, `${VAR?message}` (an error, as `docker compose` refuses to start).
fn interpolate(text: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let expression = &inner[..end];
            rest = &inner[end + 1..];
            let name_end = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            let (name, operator) = expression.split_at(name_end);
            let value = vars.get(name).copied();
            let set_nonempty = value.filter(|v| !v.is_empty());
            let resolved = if let Some(default) = operator.strip_prefix(":-") {
                set_nonempty.unwrap_or(default).to_owned()
            } else if let Some(default) = operator.strip_prefix('-') {
                value.unwrap_or(default).to_owned()
            } else if let Some(message) = operator.strip_prefix(":?") {
                set_nonempty
                    .ok_or_else(|| {
                        format!("required variable {name} is missing a value: {message}")
                    })?
                    .to_owned()
            } else if let Some(message) = operator.strip_prefix('?') {
                value
                    .ok_or_else(|| {
                        format!("required variable {name} is missing a value: {message}")
                    })?
                    .to_owned()
            } else if operator.is_empty() {
                value.unwrap_or_default().to_owned()
            } else {
                return Err(format!("unsupported interpolation ${{{expression}}}"));
            };
            out.push_str(&resolved);
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(vars.get(&rest[..name_end]).copied().unwrap_or_default());
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The port of a `HOST:PORT` address.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

// ---------------------------------------------------------------------------------
// The image, replayed into a directory.

/// The uid and gid the image's user has on this machine, when the test can switch to
/// it (runs as root); `None` when the test user is unprivileged already.
fn image_user(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str, who: Option<&str>| -> u32 {
        let out = Command::new("id")
            .arg(flag)
            .args(who)
            .output()
            .expect("id runs");
        assert!(out.status.success(), "id {flag} {who:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number")
    };
    if id("-u", None) != 0 {
        return None;
    }
    let setpriv = Command::new("setpriv").arg("--version").output();
    assert!(
        setpriv.is_ok_and(|o| o.status.success()),
        "running as root, the test needs setpriv (util-linux) to run the binaries as {user}"
    );
    Some((id("-u", Some(user)), id("-g", Some(user))))
}

/// A temporary directory standing in for the container's `/`.
struct ImageRoot {
    root: PathBuf,
}

impl ImageRoot {
    /// Replays the Dockerfile's final stage into a fresh directory.
    fn new(name: &str, image: &Dockerfile, user: Option<(u32, u32)>) -> Self {
        let root = std::env::temp_dir().join("growth-e2e").join(format!(
            "image-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let this = Self { root };
        for dir in &image.mkdirs {
            std::fs::create_dir_all(this.host_path(dir)).expect("mkdir");
        }
        let bin = this.host_path(IMAGE_BIN_DIR);
        std::fs::create_dir_all(&bin).expect("bin dir");
        for name in ["growth-collector", "growth-aggregator"] {
            std::fs::copy(binary(name), bin.join(name)).expect("copy the binary");
        }
        if user.is_some() {
            for (owner, paths) in &image.chowns {
                let status = Command::new("chown")
                    .arg("-R")
                    .arg(owner)
                    .args(paths.iter().map(|p| this.host_path(p)))
                    .status()
                    .expect("chown runs");
                assert!(status.success(), "chown -R {owner} {paths:?}");
            }
        }
        this
    }

    /// Where the image's absolute `path` is on this machine: inside the root (e.g.
    /// `/var/lib/growth/spool` is `ROOT/var/lib/growth/spool`, `/` is `ROOT`, which
    /// belongs to root as the container's `/` does).
    fn host_path(&self, path: &str) -> PathBuf {
        assert!(path.starts_with('/'), "{path} is not absolute");
        self.root.join(path.trim_start_matches('/'))
    }

    /// `env` with every value that is an absolute path taken inside the root.
    fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let v = if v.starts_with('/') {
                    self.host_path(v).to_string_lossy().into_owned()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// A command run as the image's user, with `env` only, from `workdir`.
    fn command(
        &self,
        user: Option<(u32, u32)>,
        argv: &[String],
        env: &[(String, String)],
        workdir: &str,
    ) -> Command {
        let path = IMAGE_PATH.replace(
            IMAGE_BIN_DIR,
            &self.host_path(IMAGE_BIN_DIR).to_string_lossy(),
        );
        // The program is looked up in the image's PATH, as Docker does.
        let in_image = self.host_path(IMAGE_BIN_DIR).join(&argv[0]);
        let program = if in_image.exists() {
            in_image
        } else {
            PathBuf::from(&argv[0])
        };
        let mut cmd = match user {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.host_path(workdir));
        cmd
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One service of the compose file, running in an [`ImageRoot`].
struct Container {
    process: Running,
    /// The environment it gets, after the test's substitutions, with the image's paths
    /// (taken inside a root by [`ImageRoot::env`] at each start).
    env: Vec<(String, String)>,
    /// Compose's listen port → the free port used instead.
    ports: BTreeMap<u16, u16>,
    argv: Vec<String>,
    workdir: String,
    user: Option<(u32, u32)>,
}

impl Container {
    /// Starts `service` as compose would, with the test's substitutions (module docs).
    fn start(
        root: &ImageRoot,
        image: &Dockerfile,
        compose: &Compose,
        service: &str,
        database: &str,
    ) -> Self {
        let spec = compose.service(service);
        let vars = BTreeMap::from([("GROWTH_USER_HASH_KEY", KEY)]);
        let mut env = spec
            .container_env(image, &vars)
            .unwrap_or_else(|e| panic!("docker compose would refuse: {e}"));
        let mut ports = BTreeMap::new();
        env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "GROWTH_CLICKHOUSE_USER" | "GROWTH_CLICKHOUSE_PASSWORD"
            )
        });
        for (k, v) in &mut env {
            if k == "GROWTH_CLICKHOUSE_URL" {
                assert_eq!(v, COMPOSE_CLICKHOUSE_URL, "{service}: {k}");
                *v = clickhouse_url();
            } else if let Some(port) = v.strip_prefix("0.0.0.0:").and_then(|p| p.parse().ok()) {
                let new = *ports.entry(port).or_insert_with(free_port);
                *v = format!("127.0.0.1:{new}");
            }
        }
        env.push(("GROWTH_CLICKHOUSE_DATABASE".into(), database.into()));
        let argv = spec.command.clone();
        assert!(!argv.is_empty(), "{service}: no command");
        let workdir = spec
            .working_dir
            .clone()
            .or_else(|| image.workdir.clone())
            .unwrap_or_else(|| "/".into());
        let user = image_user(
            spec.user
                .as_deref()
                .or(image.user.as_deref())
                .unwrap_or("root"),
        );
        let process = Running::spawn(
            service,
            root.command(user, &argv, &root.env(&env), &workdir),
        );
        Self {
            process,
            env,
            ports,
            argv,
            workdir,
            user,
        }
    }

    /// Starts the same service again in `root` (a new container on the same volumes),
    /// on the same ports.
    fn start_again(&mut self, root: &ImageRoot) {
        self.process.kill();
        let cmd = root.command(self.user, &self.argv, &root.env(&self.env), &self.workdir);
        self.process = Running::spawn(&self.argv[0], cmd);
    }

    /// Asserts the process runs as the image's user, from the image's working
    /// directory inside `root`.
    fn assert_runs_as_the_image_says(&self, root: &ImageRoot) {
        let pid = self.process.pid();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
        assert_eq!(
            cwd,
            root.host_path(&self.workdir),
            "{}: working directory",
            self.argv[0]
        );
        if let Some((uid, _)) = self.user {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
            let uids = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .expect("Uid line");
            assert!(
                uids.split_whitespace().all(|u| u == uid.to_string()),
                "{} runs as uid {uid} ({IMAGE_USER}): Uid:{uids}",
                self.argv[0]
            );
        }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the environment"))
    }

    /// Runs the compose health check (with the port moved) as the image's user.
    fn health_check(&self, root: &ImageRoot, compose: &Compose, service: &str) -> bool {
        let test = &compose.service(service).healthcheck;
        let mut argv: Vec<String> = match test.first().map(String::as_str) {
            Some("CMD") => test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["sh".into(), "-c".into(), test[1..].join(" ")],
            other => panic!("{service}: unsupported health check {other:?}"),
        };
        for arg in &mut argv {
            for (old, new) in &self.ports {
                *arg = arg.replace(&format!("127.0.0.1:{old}/"), &format!("127.0.0.1:{new}/"));
            }
        }
        let status = root
            .command(self.user, &argv, &[], &self.workdir)
            .status()
            .expect("the health check runs");
        status.success()
    }
}

async fn eventually_healthy(
    container: &Container,
    root: &ImageRoot,
    compose: &Compose,
    service: &str,
) {
    eventually(
        &format!("{service}'s compose health check to pass"),
        Duration::from_secs(60),
        || async { container.health_check(root, compose, service).then_some(()) },
    )
    .await;
}

/// Moves the volume directories of `service` from `from` to `to` (compose's mounts).
fn move_volumes(compose: &Compose, service: &str, from: &ImageRoot, to: &ImageRoot) {
    for (_, target) in &compose.service(service).volumes {
        let (old, new) = (from.host_path(target), to.host_path(target));
        std::fs::remove_dir_all(&new).expect("the new container's empty mount point");
        std::fs::rename(&old, &new).expect("move the volume");
    }
}

// ---------------------------------------------------------------------------------
// The tests.

/// The two files name the same paths, user and variables, and the binaries know every
/// variable they are given.
#[test]
fn the_dockerfile_and_the_compose_file_agree() {
    let image = Dockerfile::read();
    let compose = Compose::read();

    assert_eq!(image.user.as_deref(), Some(IMAGE_USER), "Dockerfile USER");
    assert_eq!(
        image.workdir.as_deref(),
        Some(IMAGE_DATA_DIR),
        "Dockerfile WORKDIR"
    );
    assert!(
        image
            .copied_to
            .iter()
            .any(|d| d.trim_end_matches('/') == IMAGE_BIN_DIR),
        "the binaries are copied to {IMAGE_BIN_DIR}: {:?}",
        image.copied_to
    );
    assert!(
        image.packages.iter().any(|p| p == "curl"),
        "curl (the health checks) is installed: {:?}",
        image.packages
    );
    // The data directory is made and owned by the image's user.
    assert!(
        image
            .mkdirs
            .iter()
            .any(|d| Path::new(d).starts_with(IMAGE_DATA_DIR)),
        "mkdir {IMAGE_DATA_DIR}: {:?}",
        image.mkdirs
    );
    assert!(
        image.chowns.iter().any(|(owner, paths)| {
            owner.split(':').next() == Some(IMAGE_USER) && paths.iter().any(|p| p == IMAGE_DATA_DIR)
        }),
        "chown {IMAGE_USER} {IMAGE_DATA_DIR}: {:?}",
        image.chowns
    );
    // Every volume of the image is a directory it made, under the data directory.
    for volume in &image.volumes {
        assert!(
            Path::new(volume).starts_with(IMAGE_DATA_DIR),
            "VOLUME {volume}"
        );
        assert!(
            image.mkdirs.contains(volume),
            "VOLUME {volume} is made by mkdir"
        );
    }

    // Where each service keeps its data, by the image's ENV or the compose file's.
    let vars = BTreeMap::from([("GROWTH_USER_HASH_KEY", KEY)]);
    for (service, variable) in [
        ("collector", "GROWTH_SPOOL_DIR"),
        ("aggregator", "GROWTH_STATE_DIR"),
    ] {
        let spec = compose.service(service);
        assert_eq!(
            spec.build.as_deref(),
            Some("."),
            "{service} is built from the Dockerfile"
        );
        assert_eq!(spec.user, None, "{service}: the image's USER, not another");
        assert_eq!(
            spec.working_dir, None,
            "{service}: the image's WORKDIR, not another"
        );
        let env = spec.container_env(&image, &vars).expect("interpolates");
        let dir = env
            .iter()
            .find(|(k, _)| k == variable)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                panic!("{service}: {variable} is set neither by the image nor by compose")
            });
        assert!(
            Path::new(&dir).starts_with(IMAGE_DATA_DIR),
            "{service}: {variable}={dir}"
        );
        assert!(
            image.volumes.contains(&dir),
            "{service}: {variable}={dir} is a VOLUME of the image"
        );
        assert!(
            image.mkdirs.contains(&dir),
            "{service}: {variable}={dir} is made by the image"
        );
        // Compose mounts a named volume exactly there, and nothing else.
        assert_eq!(spec.volumes.len(), 1, "{service}: {:?}", spec.volumes);
        let (source, target) = &spec.volumes[0];
        assert_eq!(
            target, &dir,
            "{service}: the volume is mounted on {variable}"
        );
        assert!(
            compose.volumes.contains(source),
            "{service}: {source} is a named volume"
        );

        // The binary knows every variable compose gives it (a misspelt one would be
        // ignored silently); the image's ENV is known to one of the two binaries.
        for (k, _) in &spec.environment {
            assert!(
                mentions(&help(service), k),
                "growth-{service} --help does not know {k}"
            );
        }

        // The health check asks /readyz on the service's own listen port.
        let listen = if service == "collector" {
            "GROWTH_ADMIN_ADDR"
        } else {
            "GROWTH_LISTEN_ADDR"
        };
        let addr = &env
            .iter()
            .find(|(k, _)| k == listen)
            .expect("listen address")
            .1;
        let port = port_of(addr).expect("a port");
        let check = spec.healthcheck.join(" ");
        assert!(
            check.starts_with("CMD curl ")
                && check.contains(&format!("http://127.0.0.1:{port}/readyz")),
            "{service}: {check}"
        );
        assert_eq!(
            spec.depends_on.get("clickhouse").map(String::as_str),
            Some("service_healthy"),
            "{service} waits for ClickHouse"
        );
    }
    for (k, _) in &image.env {
        assert!(
            SERVICES.iter().any(|service| mentions(&help(service), k)),
            "Dockerfile ENV {k} is known to neither binary"
        );
    }
    for later in ["prometheus", "grafana"] {
        for service in SERVICES {
            assert_eq!(
                compose
                    .service(later)
                    .depends_on
                    .get(service)
                    .map(String::as_str),
                Some("service_healthy"),
                "{later} starts once {service} is ready"
            );
        }
    }
}

/// `growth-SERVICE --help`.
fn help(service: &str) -> String {
    let out = Command::new(binary(&format!("growth-{service}")))
        .arg("--help")
        .output()
        .expect("--help runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when `text` names the variable `name` (not merely a longer one).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let next = text[at + name.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Without GROWTH_USER_HASH_KEY, `docker compose up` refuses to start.
#[test]
fn compose_refuses_to_start_without_the_key() {
    let image = Dockerfile::read();
    let compose = Compose::read();
    let collector = compose.service("collector");
    for vars in [
        BTreeMap::new(),
        BTreeMap::from([("GROWTH_USER_HASH_KEY", "")]),
    ] {
        let refused = collector.container_env(&image, &vars);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("GROWTH_USER_HASH_KEY")),
            "{refused:?}"
        );
    }
    // The aggregator hashes nothing and needs no key.
    assert!(
        compose
            .service("aggregator")
            .container_env(&image, &BTreeMap::new())
            .is_ok()
    );
}

#[test]
fn interpolation_follows_compose() {
    let vars = BTreeMap::from([("SET", "v"), ("EMPTY", "")]);
    let cases = [
        ("${SET}", "v"),
        ("a$${SET}", "a${SET}"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${SET:?no}", "v"),
        ("x-$SET-y", "x-v-y"),
    ];
    for (text, want) in cases {
        assert_eq!(interpolate(text, &vars).as_deref(), Ok(want), "{text}");
    }
    assert!(interpolate("${EMPTY:?say why}", &vars).is_err_and(|e| e.contains("say why")));
    assert!(interpolate("${UNSET?say why}", &vars).is_err());
    assert_eq!(
        parse_env("A=1 B=\"two words\""),
        vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
    );
}

/// The collector and the aggregator started as the image and compose start them: both
/// become ready (and healthy by compose's check), events sent over OTLP are stored
/// (user ids hashed with the compose key), and after the collector is killed (-9) and
/// started again as a new container on the same volume nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn the_stack_runs_as_the_image_and_compose_run_it() {
    let image = Dockerfile::read();
    let compose = Compose::read();
    let database = unique_database("docker");
    let user = image_user(image.user.as_deref().unwrap_or("root"));
    let first = ImageRoot::new("first", &image, user);

    let mut collector = Container::start(&first, &image, &compose, "collector", &database);
    let admin = format!("http://{}", collector.var("GROWTH_ADMIN_ADDR"));
    collector
        .process
        .wait_ready(&format!("{admin}/readyz"), Duration::from_secs(60))
        .await;
    eventually_healthy(&collector, &first, &compose, "collector").await;
    collector.assert_runs_as_the_image_says(&first);

    let mut aggregator = Container::start(&first, &image, &compose, "aggregator", &database);
    let listen = format!("http://{}", aggregator.var("GROWTH_LISTEN_ADDR"));
    aggregator
        .process
        .wait_ready(&format!("{listen}/readyz"), Duration::from_secs(60))
        .await;
    eventually_healthy(&aggregator, &first, &compose, "aggregator").await;
    aggregator.assert_runs_as_the_image_says(&first);

    // A raw user id, hashed by the collector with the key compose gave it.
    let http = format!("http://{}", collector.var("GROWTH_OTLP_HTTP_ADDR"));
    let answer = reqwest::Client::new()
        .post(format!("{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(raw_user_request().encode_to_vec())
        .send()
        .await
        .expect("the collector answers");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let expected = UserHasher::new(Some(KEY.as_bytes().to_vec()))
        .hash("alice@example.com")
        .into_string();
    let stored: String = eventually(
        "the raw-id event in ClickHouse",
        Duration::from_secs(30),
        || async {
            clickhouse(&database)
                .query("SELECT user_hash FROM events WHERE app = 'docker-raw'")
                .fetch_optional::<String>()
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    assert_eq!(stored, expected, "hashed with GROWTH_USER_HASH_KEY");

    // A load; the collector killed under it and started again as a new container on
    // the same volume. Senders retry as OTLP exporters do.
    let total = 20_000;
    let progress = load::Progress::default();
    let sending = tokio::spawn(load::run(
        Load {
            endpoint: http.clone(),
            app: "docker-kill".into(),
            total,
            per_request: 100,
            concurrency: 4,
            pause: Duration::ZERO,
            poison: vec![],
        },
        progress.clone(),
        Duration::from_secs(120),
    ));
    eventually("acknowledgements", Duration::from_secs(60), || async {
        (progress.load(Ordering::SeqCst) >= total / 3).then_some(())
    })
    .await;
    collector.process.signal("KILL");
    collector.process.wait_exit(Duration::from_secs(5));
    let acked_before_kill = progress.load(Ordering::SeqCst);

    // What the dead container left: the spool in its volume, owned by the image's
    // user; nothing else in the data directory but the volumes.
    let spool = first.host_path(collector_spool_dir(&image, &compose).as_str());
    let entries: Vec<PathBuf> = std::fs::read_dir(&spool)
        .expect("the spool volume")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        !entries.is_empty(),
        "the spool is in its volume {}",
        spool.display()
    );
    if let Some((uid, _)) = user {
        for entry in &entries {
            let owner = std::fs::metadata(entry).expect("metadata").uid();
            assert_eq!(owner, uid, "{} is owned by {IMAGE_USER}", entry.display());
        }
    }
    let mut in_data_dir: Vec<String> = std::fs::read_dir(first.host_path(IMAGE_DATA_DIR))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    in_data_dir.sort();
    let mut volumes: Vec<String> = image
        .volumes
        .iter()
        .filter_map(|v| Path::new(v).strip_prefix(IMAGE_DATA_DIR).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    volumes.sort();
    assert_eq!(
        in_data_dir, volumes,
        "only the volumes are written in {IMAGE_DATA_DIR}"
    );

    let second = ImageRoot::new("second", &image, user);
    move_volumes(&compose, "collector", &first, &second);
    collector.start_again(&second);
    collector
        .process
        .wait_ready(&format!("{admin}/readyz"), Duration::from_secs(60))
        .await;
    eventually_healthy(&collector, &second, &compose, "collector").await;
    collector.assert_runs_as_the_image_says(&second);

    let report = sending.await.expect("load");
    assert_eq!(report.acked, total);
    assert!(
        acked_before_kill < total,
        "the kill landed under load: {report:?}"
    );
    let metrics = || async {
        let text = reqwest::get(format!("{admin}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(growth_e2e::Exposition::parse(&text))
    };
    eventually(
        "the spool to drain into ClickHouse",
        Duration::from_secs(60),
        || async {
            let drained = metrics().await?.value("growth_collector_spool_rows") == 0.0;
            let (_, distinct, _) = load::stored(&database, "docker-kill").await;
            (drained && distinct == total).then_some(())
        },
    )
    .await;
    load::assert_exactly_once(&database, "docker-kill", total, &[]).await;
    let recovered = metrics()
        .await
        .expect("metrics")
        .value("growth_collector_spool_recovered_rows_total");
    assert!(
        recovered > 0.0,
        "the new container found acknowledged rows in the volume"
    );

    // The aggregator keeps its day cache in its volume.
    let state = first.host_path(&aggregator_state_dir(&image, &compose));
    eventually(
        "the aggregator's day cache in its volume",
        Duration::from_secs(30),
        || async {
            std::fs::read_dir(&state)
                .ok()
                .and_then(|mut d| d.next())
                .map(drop)
        },
    )
    .await;
    aggregator.process.kill();
    collector.process.kill();
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .query("DROP DATABASE ?")
        .bind(clickhouse::sql::Identifier(&database))
        .execute()
        .await
        .expect("drop");
}

fn collector_spool_dir(image: &Dockerfile, compose: &Compose) -> String {
    service_dir(image, compose, "collector", "GROWTH_SPOOL_DIR")
}

fn aggregator_state_dir(image: &Dockerfile, compose: &Compose) -> String {
    service_dir(image, compose, "aggregator", "GROWTH_STATE_DIR")
}

fn service_dir(image: &Dockerfile, compose: &Compose, service: &str, variable: &str) -> String {
    let vars = BTreeMap::from([("GROWTH_USER_HASH_KEY", KEY)]);
    let env = compose
        .service(service)
        .container_env(image, &vars)
        .expect("interpolates");
    env.into_iter()
        .find(|(k, _)| k == variable)
        .map(|(_, v)| v)
        .or_else(|| image.env(variable).map(str::to_owned))
        .unwrap_or_else(|| panic!("{variable} is not set for {service}"))
}

fn raw_user_request() -> ExportLogsServiceRequest {
    let text = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(AnyValueKind::StringValue(v.into())),
        }),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![text("service.name", "docker-raw")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    event_name: "signed_up".into(),
                    time_unix_nano: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64,
                    attributes: vec![text("user.id", "alice@example.com")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
