//! The Dockerfile, checked without a Docker engine: what it copies exists and survives
//! .dockerignore, it copies every source cargo needs, its ENTRYPOINT is the binary the build
//! produces, it exposes the port vigil listens on by default, and hadolint has nothing to say.

mod deploy_support;

use deploy_support::*;
use std::path::{Path, PathBuf};

/// One instruction: keyword and its arguments, continuation lines joined.
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions() -> Vec<Instruction> {
    let text = read(&root().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (k, a) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push(Instruction { keyword: k.to_uppercase(), args: a.trim().to_owned() });
        current.clear();
    }
    out
}

fn args_of<'a>(ins: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    ins.iter().filter(|i| i.keyword == keyword).map(|i| i.args.as_str()).collect()
}

/// `COPY [--from=x] [--chown..] src... dest`: (from, sources, dest).
fn copies(ins: &[Instruction]) -> Vec<(Option<String>, Vec<String>, String)> {
    args_of(ins, "COPY")
        .into_iter()
        .map(|a| {
            let mut words: Vec<&str> = a.split_whitespace().collect();
            let from = words.iter().find_map(|w| w.strip_prefix("--from=")).map(str::to_owned);
            words.retain(|w| !w.starts_with("--"));
            let dest = words.pop().expect("COPY has a destination").to_owned();
            (from, words.into_iter().map(str::to_owned).collect(), dest)
        })
        .collect()
}

/// A JSON-array (exec form) instruction's words.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("`{args}` is not exec (JSON array) form: {e}"))
}

/// .dockerignore as Docker applies it: the last matching pattern wins, `!` re-includes.
fn ignored(path: &str) -> bool {
    let mut verdict = false;
    for line in read(&root().join(".dockerignore")).lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (include, pat) = match l.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, l),
        };
        let pat = pat.trim_end_matches('/');
        let glob = globset::GlobBuilder::new(pat).literal_separator(true).build().expect("pattern").compile_matcher();
        // A pattern matching a directory covers everything below it.
        let p = Path::new(path);
        if p.ancestors().filter(|a| !a.as_os_str().is_empty()).any(|a| glob.is_match(a)) {
            verdict = !include;
        }
    }
    verdict
}

#[test]
fn every_copy_source_exists_and_is_in_the_build_context() {
    let ins = instructions();
    let local: Vec<String> = copies(&ins).into_iter().filter(|(from, _, _)| from.is_none()).flat_map(|c| c.1).collect();
    assert!(!local.is_empty(), "the Dockerfile copies nothing from the context");
    for src in &local {
        let path = root().join(src);
        assert!(path.exists(), "COPY {src}: no such file in the repository");
        assert!(!ignored(src), "COPY {src}: excluded by .dockerignore");
        if path.is_dir() {
            for f in files_under(&path, "rs") {
                let rel = f.strip_prefix(root()).expect("under root").display().to_string();
                assert!(!ignored(&rel), "{rel} is excluded by .dockerignore but COPY {src} needs it");
            }
        }
    }
    // And the context stays small: what the build never reads is kept out.
    for heavy in ["target", ".git", "manifests", "dashboards"] {
        assert!(ignored(heavy), "{heavy} should be excluded by .dockerignore");
    }
}

#[test]
fn the_build_copies_every_source_cargo_reads() {
    // cargo refuses to build when a target declared in Cargo.toml has no source file, even one
    // the build does not compile (an explicit [[bench]], [[test]] or [[example]]).
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata:\n{}", text(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let manifest = read(&root().join("Cargo.toml"));
    let explicit = |kind: &str| manifest.lines().any(|l| l.trim() == format!("[[{kind}]]"));
    let copied: Vec<PathBuf> = copies(&instructions())
        .into_iter()
        .filter(|(from, _, _)| from.is_none())
        .flat_map(|c| c.1)
        .map(|s| root().join(s.trim_end_matches('/')))
        .collect();
    let mut needed = vec![root().join("Cargo.toml"), root().join("Cargo.lock")];
    for t in meta["packages"][0]["targets"].as_array().expect("targets") {
        let kind = t["kind"][0].as_str().expect("kind");
        let must = match kind {
            "lib" | "bin" | "custom-build" | "proc-macro" => true,
            "test" | "bench" | "example" => explicit(kind),
            _ => true,
        };
        if must {
            needed.push(PathBuf::from(t["src_path"].as_str().expect("src_path")));
        }
    }
    for n in needed {
        assert!(
            copied.iter().any(|c| n.starts_with(c)),
            "the Dockerfile does not COPY {} (cargo needs it to build)",
            n.strip_prefix(root()).unwrap_or(&n).display()
        );
    }
}

#[test]
fn the_entrypoint_is_the_binary_the_build_produces() {
    let ins = instructions();
    let runs = args_of(&ins, "RUN").join("\n");
    let bin = "vigil";
    assert_eq!(
        std::path::Path::new(env!("CARGO_BIN_EXE_vigil")).file_name().and_then(|f| f.to_str()),
        Some(bin),
        "the binary cargo builds"
    );
    assert!(runs.contains("cargo build --release --locked"), "the build must be a locked release build:\n{runs}");
    // The release binary is copied out of the (cache-mounted) target dir to a staging path...
    let staged = runs
        .split("&&")
        .find_map(|cmd| {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            let i = w.iter().position(|x| *x == format!("target/release/{bin}"))?;
            matches!(w.first(), Some(&"install") | Some(&"cp")).then(|| w.get(i + 1).map(|s| s.to_string()))?
        })
        .unwrap_or_else(|| panic!("no RUN copies target/release/{bin} out of the build:\n{runs}"));
    // ...which the final stage copies to the ENTRYPOINT's path.
    let final_copy = copies(&ins)
        .into_iter()
        .find(|(from, srcs, _)| from.is_some() && srcs.contains(&staged))
        .unwrap_or_else(|| panic!("no COPY --from takes {staged} into the runtime image"));
    let entry = exec_form(args_of(&ins, "ENTRYPOINT").last().expect("ENTRYPOINT"));
    assert_eq!(entry, std::slice::from_ref(&final_copy.2), "ENTRYPOINT vs the copied binary");
    // The default command is one the binary accepts.
    let cmd = exec_form(args_of(&ins, "CMD").last().expect("CMD"));
    let help = std::process::Command::new(vigil()).arg(&cmd[0]).arg("--help").output().expect("vigil --help");
    assert!(help.status.success(), "CMD {cmd:?}: `vigil {} --help` failed:\n{}", cmd[0], text(&help));
    // The two stages exist and the base images are pinned (no implicit :latest).
    let froms = args_of(&ins, "FROM");
    assert_eq!(froms.len(), 2, "multi-stage: build and runtime");
    for f in froms {
        let image = f.split_whitespace().next().expect("image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest" && !tag.contains('/'), "FROM {image}: pin a tag");
    }
}

#[test]
fn the_exposed_port_is_the_default_listen_port() {
    // The embedded default config is src/config/default.yaml (include_str!); validate it with
    // the binary to read the effective listen address.
    let cfg = vigil_validate(&read(&root().join("src/config/default.yaml")), &[]).expect("default config");
    let listen = str_at(&cfg, &["metrics", "listen"]);
    let port = listen.rsplit_once(':').map(|(_, p)| p.to_owned()).expect("port");
    let exposed = args_of(&instructions(), "EXPOSE").join(" ");
    assert_eq!(exposed, port, "EXPOSE vs metrics.listen default {listen}");
}

#[test]
fn hadolint_passes() {
    let out = tool("hadolint", &["Dockerfile"], &root());
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", text(&out));
}

#[test]
fn the_dockerignore_matcher_follows_docker_semantics() {
    // The allowlist in .dockerignore: everything out, then named paths back in.
    assert!(ignored("target/release/vigil"));
    assert!(ignored("README.md"));
    assert!(!ignored("src/main.rs"));
    assert!(!ignored("Cargo.lock"));
}
