//! `--compare fluent-bit=PATH` / `vector=PATH`: the same data set read by another agent into an
//! NDJSON file, measured like vigil (CPU from `wait4`, done when every line is in the output).
//!
//! The configurations follow each project's documentation (Fluent Bit `tail` with the built-in
//! `cri`/`docker` multiline parsers and the `file` output; Vector `file` source, a `remap` that
//! parses the CRI or docker framing, `file` sink with JSON). Neither agent is installed on the
//! machine this was written on, so this path is untested there.

use crate::data::{Fmt, count_newlines, include};
use crate::proc::Usage;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    FluentBit,
    Vector,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::FluentBit => "fluent-bit",
            Agent::Vector => "vector",
        }
    }

    pub fn parse(spec: &str) -> Result<(Agent, PathBuf), String> {
        let (name, path) = spec.split_once('=').ok_or("expected NAME=PATH")?;
        let agent = match name {
            "fluent-bit" | "fluentbit" => Agent::FluentBit,
            "vector" => Agent::Vector,
            _ => return Err(format!("unknown agent '{name}': expected fluent-bit or vector")),
        };
        Ok((agent, PathBuf::from(path)))
    }
}

/// The agent's config for reading `root` into `out`; returns (config path, args).
pub fn config(agent: Agent, work: &Path, root: &Path, fmt: Fmt, out: &Path) -> (PathBuf, Vec<String>) {
    let state = work.join(format!("{}-state", agent.name()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    match agent {
        Agent::FluentBit => {
            let path = work.join("fluent-bit.conf");
            let text = format!(
                "[SERVICE]\n    Flush 1\n    Log_Level warn\n\n\
                 [INPUT]\n    Name tail\n    Path {}\n    multiline.parser {}\n    Read_from_Head true\n\
                 \x20   DB {}/tail.db\n    Refresh_Interval 1\n    Buffer_Chunk_Size 256k\n    Buffer_Max_Size 1M\n\n\
                 [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File {}\n    Format plain\n",
                include(root, fmt),
                fmt.name(),
                state.display(),
                out.parent().unwrap().display(),
                out.file_name().unwrap().to_string_lossy(),
            );
            std::fs::write(&path, text).unwrap();
            (path.clone(), vec!["-c".into(), path.display().to_string()])
        }
        Agent::Vector => {
            let path = work.join("vector.toml");
            let parse = match fmt {
                Fmt::Cri => {
                    r#"p = parse_regex!(.message, r'^(?P<time>\S+) (?P<stream>stdout|stderr) (?P<tag>[PF]) (?P<log>.*)$')
.stream = p.stream
.message = p.log"#
                }
                Fmt::Docker => {
                    r#"p = object!(parse_json!(.message))
.stream = p.stream
.message = p.log"#
                }
            };
            let text = format!(
                "data_dir = \"{}\"\n\n[sources.in]\ntype = \"file\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\n\n\
                 [transforms.parse]\ntype = \"remap\"\ninputs = [\"in\"]\nsource = '''\n{parse}\n'''\n\n\
                 [sinks.out]\ntype = \"file\"\ninputs = [\"parse\"]\npath = \"{}\"\nencoding.codec = \"json\"\n",
                state.display(),
                include(root, fmt),
                out.display(),
            );
            std::fs::write(&path, text).unwrap();
            (path.clone(), vec!["--config".into(), path.display().to_string(), "--quiet".into()])
        }
    }
}

/// Runs the agent until `lines` lines are in its output (at most 10 minutes).
#[allow(clippy::zombie_processes)]
pub fn run(agent: Agent, bin: &Path, work: &Path, root: &Path, fmt: Fmt, lines: u64) -> Result<Usage, String> {
    let out = work.join(format!("{}-out.ndjson", agent.name()));
    let _ = std::fs::remove_file(&out);
    let (_, args) = config(agent, work, root, fmt, &out);
    let started = Instant::now();
    let child = Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let (mut pos, mut count) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        count_newlines(&out, &mut pos, &mut count);
    }
    let usage = crate::proc::stop(&child, started);
    if count < lines {
        return Err(format!("{} delivered {count} of {lines} lines", agent.name()));
    }
    Ok(usage)
}
