//! The Dockerfile without a container engine: its build stage must COPY everything the
//! workspace manifests need. The test lays out exactly the paths the build stage COPYs (minus
//! what `.dockerignore` keeps out of the context) into an empty directory and runs cargo there:
//! `cargo metadata --locked --offline` (workspace members, path dependencies, the lock file)
//! and `cargo fetch --locked --offline`, which also parses every target the manifests declare
//! (an explicit `[[bench]]` whose file was not copied fails it, as it fails `cargo build`).
//! The image stages themselves are checked structurally; `make test` also runs hadolint.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dockerfile() -> String {
    fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile")
}

fn dockerignore() -> String {
    fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore")
}

// ---------------------------------------------------------------------------------------
// A small Dockerfile reader: instructions with line continuations joined, grouped by stage.

#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn parse(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are dropped, as Docker does.
        if !current.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("unexpected FROM {other:?}"),
            };
            stages.push(Stage {
                base: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before the first FROM"))
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// A COPY from the build context: sources relative to the context, destination resolved
/// against the stage's WORKDIR.
#[derive(Debug, Clone, PartialEq)]
struct ContextCopy {
    sources: Vec<String>,
    dest: String,
}

fn words(args: &str) -> Vec<String> {
    let args = args.trim();
    if args.starts_with('[') {
        serde_json::from_str(args).expect("JSON-form instruction")
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// The COPY instructions that read the build context in `chain` (a stage and the stages it
/// is built FROM, root first), with WORKDIR carried down the chain.
fn context_copies(chain: &[&Stage]) -> Vec<ContextCopy> {
    let mut workdir = "/".to_string();
    let mut out = Vec::new();
    for ins in chain.iter().flat_map(|s| &s.instructions) {
        match ins.keyword.as_str() {
            "WORKDIR" => {
                let w = ins.args.trim();
                workdir = if w.starts_with('/') {
                    w.to_string()
                } else {
                    format!("{}/{w}", workdir.trim_end_matches('/'))
                };
            }
            "COPY" | "ADD" => {
                let mut flags = Vec::new();
                let mut rest = Vec::new();
                let mut args = ins.args.trim();
                // Flags precede the JSON form too: `COPY --chown=1:1 ["a", "b"]`.
                while let Some(stripped) = args.strip_prefix("--") {
                    let (flag, tail) = stripped
                        .split_once(char::is_whitespace)
                        .unwrap_or((stripped, ""));
                    flags.push(flag.to_string());
                    args = tail.trim_start();
                }
                rest.extend(words(args));
                if flags.iter().any(|f| f.starts_with("from=")) {
                    continue;
                }
                assert_eq!(ins.keyword, "COPY", "use COPY, not ADD, for context files");
                let dest = rest.pop().expect("COPY destination");
                assert!(!rest.is_empty(), "COPY without a source");
                let dest = if dest.starts_with('/') {
                    dest
                } else {
                    format!("{}/{}", workdir.trim_end_matches('/'), dest)
                };
                out.push(ContextCopy {
                    sources: rest,
                    dest,
                });
            }
            _ => {}
        }
    }
    out
}

/// The stage that runs `cargo build` of the operator binary, and the stages it is built
/// FROM (root first).
fn build_chain(stages: &[Stage]) -> Vec<&Stage> {
    let found: Vec<&Stage> = stages
        .iter()
        .filter(|s| {
            s.instructions.iter().any(|i| {
                i.keyword == "RUN"
                    && i.args.contains("cargo build")
                    && i.args.contains("--bin oos-chat-operator")
            })
        })
        .collect();
    assert_eq!(found.len(), 1, "exactly one stage builds the operator");
    let mut chain = vec![found[0]];
    while let Some(parent) = stages
        .iter()
        .find(|p| p.name.is_some() && p.name.as_ref() == Some(&chain[0].base))
    {
        assert!(chain.len() < stages.len(), "FROM cycle");
        chain.insert(0, parent);
    }
    chain
}

fn workdir_of(chain: &[&Stage]) -> String {
    chain
        .iter()
        .flat_map(|s| &s.instructions)
        .rfind(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.trim().to_string())
        .unwrap_or_else(|| "/".into())
}

// ---------------------------------------------------------------------------------------
// .dockerignore: Docker's rules for the patterns this repository uses: path segments, `*`
// and `?` within a segment, `**` for any number of segments, `!` to re-include, the last
// matching line wins, and a matched directory excludes everything below it.

struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negate, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                let segs = p
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                (negate, segs)
            })
            .collect();
        Ignore { rules }
    }

    /// `path` is relative to the context, `/`-separated.
    fn excludes(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (negate, pattern) in &self.rules {
            // The path or one of its parent directories.
            if (1..=segs.len()).any(|n| match_segments(pattern, &segs[..n])) {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((s, tail)) => glob(p.as_bytes(), s.as_bytes()) && match_segments(rest, tail),
            None => false,
        },
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Laying out the context files a stage COPYs.

/// Copies `src` (a context path) to `dest` with Docker's COPY semantics: a directory's
/// contents go into `dest`, a file goes to `dest` (or into it when it ends with `/` or there
/// are several sources). Files `.dockerignore` excludes are not in the context.
fn lay_out(copies: &[ContextCopy], workdir: &str, ignore: &Ignore, root: &Path) -> PathBuf {
    let out = tempfile::tempdir().unwrap().keep();
    for copy in copies {
        let dest_rel = copy
            .dest
            .strip_prefix(workdir)
            .unwrap_or_else(|| panic!("COPY destination {} outside WORKDIR {workdir}", copy.dest))
            .trim_start_matches('/')
            .trim_start_matches("./")
            .to_string();
        let into_dir = copy.dest.ends_with('/') || copy.sources.len() > 1;
        for src in &copy.sources {
            let src_rel = src.trim_start_matches("./").trim_end_matches('/');
            let from = root.join(src_rel);
            assert!(from.exists(), "COPY source {src} does not exist");
            // Docker fails such a COPY: the source is not in the build context.
            assert!(
                !ignore.excludes(src_rel),
                "COPY source {src} is in .dockerignore"
            );
            if from.is_dir() {
                copy_tree(&from, src_rel, &out.join(&dest_rel), ignore);
            } else {
                let to = if into_dir || dest_rel.is_empty() || dest_rel == "." {
                    out.join(&dest_rel).join(from.file_name().unwrap())
                } else {
                    out.join(&dest_rel)
                };
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::copy(&from, &to).unwrap();
            }
        }
    }
    out
}

fn copy_tree(from: &Path, rel: &str, to: &Path, ignore: &Ignore) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let child_rel = format!("{rel}/{name}");
        if ignore.excludes(&child_rel) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &child_rel, &to.join(&name), ignore);
        } else {
            fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// The host's target triple. The checks are offline and limited to it: a fresh machine has
/// downloaded only the host's crates (`cargo test` fetched them), not those that only other
/// platforms need (e.g. `android_system_properties`).
fn host_triple() -> String {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let platform = match args.first() {
        Some(&"metadata") => vec!["--filter-platform".to_string(), host_triple()],
        Some(&"fetch") => vec!["--target".to_string(), host_triple()],
        _ => Vec::new(),
    };
    Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args(args)
        .args(platform)
        .current_dir(dir)
        // Never touch the real target dir or write a lock file next to the copy.
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("run cargo")
}

const METADATA: &[&str] = &["metadata", "--locked", "--offline", "--format-version", "1"];
const FETCH: &[&str] = &["fetch", "--locked", "--offline"];

struct Layout(PathBuf);
impl Drop for Layout {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn layout_of(copies: &[ContextCopy], workdir: &str) -> Layout {
    Layout(lay_out(
        copies,
        workdir,
        &Ignore::parse(&dockerignore()),
        Path::new(ROOT),
    ))
}

fn the_build_copies() -> (Vec<ContextCopy>, String) {
    let stages = parse(&dockerfile());
    let chain = build_chain(&stages);
    (context_copies(&chain), workdir_of(&chain))
}

// ---------------------------------------------------------------------------------------

#[test]
fn build_stage_copies_a_complete_workspace() {
    let (copies, workdir) = the_build_copies();
    let layout = layout_of(&copies, &workdir);

    let out = cargo(&layout.0, METADATA);
    assert!(
        out.status.success(),
        "cargo metadata in the COPY layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(members.len(), 3, "all workspace members load: {members:?}");

    // The package and binaries the RUN lines build exist in the layout.
    let bins = |package: &str| -> Vec<String> {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == package)
            .unwrap_or_else(|| panic!("package {package} in the layout"))["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(bins("oos-chat-operator").contains(&"oos-chat-operator".to_string()));
    assert!(bins("oos-emulator").contains(&"oos-emulator".to_string()));

    // Every declared target (e.g. the emulator's [[bench]]) has its file.
    let out = cargo(&layout.0, FETCH);
    assert!(
        out.status.success(),
        "cargo fetch in the COPY layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !layout.0.join("target").exists(),
        "nothing was built in the layout"
    );
}

/// The check bites: without `crates/` the workspace does not load, and without the
/// emulator's benches the manifests do not parse.
#[test]
fn incomplete_layouts_fail() {
    let (copies, workdir) = the_build_copies();
    let without_crates: Vec<ContextCopy> = copies
        .iter()
        .map(|c| ContextCopy {
            sources: c
                .sources
                .iter()
                .filter(|s| !s.trim_start_matches("./").starts_with("crates"))
                .cloned()
                .collect(),
            dest: c.dest.clone(),
        })
        .filter(|c| !c.sources.is_empty())
        .collect();
    assert!(
        without_crates.len() < copies.len(),
        "the build stage copies crates/"
    );
    let layout = layout_of(&without_crates, &workdir);
    let out = cargo(&layout.0, METADATA);
    assert!(!out.status.success(), "metadata passed without crates/");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("crates/oos-"), "{stderr}");

    let layout = layout_of(&copies, &workdir);
    fs::remove_dir_all(layout.0.join("crates/oos-emulator/benches")).unwrap();
    let out = cargo(&layout.0, FETCH);
    assert!(!out.status.success(), "fetch passed without the benches");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("emulator_throughput"), "{stderr}");

    // The Dockerfile this project used to have: manifests and src/ only.
    let old = parse(
        "FROM rust:1 AS build\nWORKDIR /src\nCOPY Cargo.toml Cargo.lock ./\nCOPY src ./src\n\
         RUN cargo build --release\n",
    );
    let layout = layout_of(&context_copies(&[&old[0]]), "/src");
    assert!(!cargo(&layout.0, METADATA).status.success());
}

#[test]
fn dockerignore_rules() {
    let ignore = Ignore::parse(
        "target\n**/target\n.git\n**/*.pyc\ndocs\n!docs/keep.md\ntests/conformance\n",
    );
    for excluded in [
        "target",
        "target/debug/x",
        "crates/oos-client/target/a",
        ".git/HEAD",
        "tests/conformance/x.py",
        "a/b/c.pyc",
        "docs/emulator.md",
    ] {
        assert!(ignore.excludes(excluded), "{excluded} should be excluded");
    }
    for kept in [
        "src/main.rs",
        "crates/oos-client/src/lib.rs",
        "tests/controller.rs",
        "docs/keep.md",
        "targets.rs",
    ] {
        assert!(!ignore.excludes(kept), "{kept} should be kept");
    }
    // The real file keeps every build input in the context.
    let real = Ignore::parse(&dockerignore());
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "crates/oos-emulator/benches/emulator_throughput.rs",
        "crates/oos-client/Cargo.toml",
    ] {
        assert!(!real.excludes(kept), "{kept} is excluded by .dockerignore");
    }
    for excluded in ["target/debug/oos-chat-operator", ".git/config"] {
        assert!(real.excludes(excluded), "{excluded} is in the context");
    }
}

#[test]
fn images_are_minimal_and_non_root() {
    let stages = parse(&dockerfile());
    let chain = build_chain(&stages);
    let run = chain
        .last()
        .unwrap()
        .instructions
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    for flag in [
        "--release",
        "--locked",
        "-p oos-chat-operator",
        "--bin oos-chat-operator",
    ] {
        assert!(
            run.args.contains(flag),
            "cargo build lacks {flag}: {}",
            run.args
        );
    }

    // The default target (last stage) is the operator; `emulator` is a named target.
    let operator = stages.last().unwrap();
    let emulator = stages
        .iter()
        .find(|s| s.name.as_deref() == Some("emulator"))
        .expect("an `emulator` stage");
    for (stage, binary) in [(operator, "oos-chat-operator"), (emulator, "oos-emulator")] {
        assert!(
            stage.base.starts_with("gcr.io/distroless/") || stage.base == "scratch",
            "{binary}: base {} is not distroless/static",
            stage.base
        );
        let keywords: Vec<&str> = stage
            .instructions
            .iter()
            .map(|i| i.keyword.as_str())
            .collect();
        assert!(
            !keywords.contains(&"RUN"),
            "{binary}: no RUN in a final stage"
        );
        let copies: Vec<&Instruction> = stage
            .instructions
            .iter()
            .filter(|i| i.keyword == "COPY")
            .collect();
        assert_eq!(copies.len(), 1, "{binary}: exactly one file is copied in");
        let w = words(&copies[0].args);
        assert!(
            w[0].starts_with("--from="),
            "{binary}: copied from a build stage"
        );
        assert!(w[1].ends_with(&format!("/{binary}")), "{binary}: {w:?}");
        let users: Vec<&str> = stage
            .instructions
            .iter()
            .filter(|i| i.keyword == "USER")
            .map(|i| i.args.as_str())
            .collect();
        assert_eq!(users, ["65532:65532"], "{binary}: numeric non-root user");
        let entry = stage
            .instructions
            .iter()
            .find(|i| i.keyword == "ENTRYPOINT")
            .unwrap();
        assert_eq!(words(&entry.args), [format!("/usr/local/bin/{binary}")]);
    }
}
