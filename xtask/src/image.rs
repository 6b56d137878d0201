//! `cargo xtask image`: builds the operator image without a registry or a container engine,
//! writes it as an OCI archive and checks it.
//!
//! The `Dockerfile` is for people with a registry (its base images must be pulled). This path
//! needs none: the image is assembled with buildah from an empty (`scratch`) image, using the
//! vfs storage driver in a private storage directory under the target directory, and holds
//! only what the release binary needs:
//!
//! - the binary at the Dockerfile's path;
//! - the shared libraries `ldd` names (glibc, libgcc) and the dynamic loader, at the paths the
//!   binary asks for (none when the binary is static);
//! - `/etc/passwd` and `/etc/group` with the numeric non-root user (65532) the image runs as,
//!   and `/etc/nsswitch.conf` so host names resolve from `/etc/hosts` before DNS, as in a Pod;
//! - the host's CA bundle at `/etc/ssl/certs/ca-certificates.crt`: the Kubernetes client reads the
//!   system roots when a kubeconfig names no CA of its own.
//!
//! No shell, no package manager. The checks read the archive back, not buildah's view of it:
//! the image config (user, entrypoint, command, labels, exposed ports) must equal
//! [`ImageSpec::operator`], which a unit test keeps equal to the Dockerfile; the layer must hold
//! exactly the staged files; and `tikv-operator version` and `tikv-operator crd` must run from
//! the image's own filesystem (`buildah mount` of a container made from the archive, then
//! `chroot` as the image's user, with an empty environment).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};

/// Arguments of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this binary instead of building `tikv-operator` with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Where to write the OCI archive (default: `<target dir>/image/tikv-operator.oci.tar`).
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
}

/// What the image looks like from outside: the Dockerfile's final stage must describe the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where the binary lives in the image.
    pub binary_path: String,
    /// `USER`: numeric `uid:gid`, never root.
    pub user: String,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `EXPOSE`, as `port/protocol`.
    pub exposed_ports: BTreeSet<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

/// The non-root user and group the image runs as.
pub const UID: u32 = 65532;

impl ImageSpec {
    /// The operator image.
    pub fn operator() -> Self {
        let binary_path = "/usr/local/bin/tikv-operator".to_owned();
        let labels = [
            ("org.opencontainers.image.title", "tikv-operator"),
            (
                "org.opencontainers.image.description",
                "Runs TiKV clusters (PD + TiKV) on Kubernetes",
            ),
            ("org.opencontainers.image.licenses", "Apache-2.0"),
            (
                "org.opencontainers.image.version",
                env!("CARGO_PKG_VERSION"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            entrypoint: vec![binary_path.clone()],
            binary_path,
            user: format!("{UID}:{UID}"),
            cmd: vec!["run".to_owned()],
            exposed_ports: BTreeSet::from(["8080/tcp".to_owned()]),
            labels,
        }
    }
}

/// Reads the final stage of a Dockerfile into an [`ImageSpec`]. Understands what the project's
/// Dockerfile uses: `FROM`, `COPY`, `USER`, `EXPOSE`, `LABEL`, exec-form `ENTRYPOINT` and `CMD`;
/// continuation lines and comments.
pub fn parse_dockerfile(text: &str) -> anyhow::Result<ImageSpec> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if !current.trim().is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    // Only the final stage makes the image.
    let start = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .context("no FROM in the Dockerfile")?;
    let mut spec = ImageSpec {
        binary_path: String::new(),
        user: String::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        exposed_ports: BTreeSet::new(),
        labels: BTreeMap::new(),
    };
    for line in &lines[start + 1..] {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instr.to_ascii_uppercase().as_str() {
            "USER" => spec.user = rest.to_owned(),
            "ENTRYPOINT" => {
                spec.entrypoint = serde_json::from_str(rest)
                    .with_context(|| format!("ENTRYPOINT is not in exec form: {rest}"))?;
            }
            "CMD" => {
                spec.cmd = serde_json::from_str(rest)
                    .with_context(|| format!("CMD is not in exec form: {rest}"))?;
            }
            "EXPOSE" => {
                for port in rest.split_whitespace() {
                    let port = if port.contains('/') {
                        port.to_owned()
                    } else {
                        format!("{port}/tcp")
                    };
                    spec.exposed_ports.insert(port);
                }
            }
            "LABEL" => {
                for word in shell_words(rest)? {
                    let (k, v) = word
                        .split_once('=')
                        .with_context(|| format!("LABEL without `=`: {word}"))?;
                    spec.labels.insert(k.to_owned(), v.to_owned());
                }
            }
            "COPY" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                if let Some(dest) = words.last()
                    && dest.ends_with("/tikv-operator")
                {
                    spec.binary_path = (*dest).to_owned();
                }
            }
            _ => {}
        }
    }
    Ok(spec)
}

/// Splits `a="x y" b=z` into `a=x y`, `b=z` (double quotes only, as the Dockerfile uses).
fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    ensure!(!quoted, "unbalanced quotes in {s:?}");
    if any {
        out.push(word);
    }
    Ok(out)
}

/// The libraries `ldd` says a binary loads, loader included; empty for a static binary.
pub fn parse_ldd(output: &str) -> anyhow::Result<Vec<PathBuf>> {
    if output.contains("statically linked") || output.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            bail!("a library the binary needs is missing on this machine: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        // The vDSO has no file (`linux-vdso.so.1 (0x...)`).
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    ensure!(!libs.is_empty(), "could not read ldd's output:\n{output}");
    Ok(libs)
}

/// Files of the image, relative to `/`, with their mode; what is staged and what the layer must
/// hold exactly.
fn image_files(binary: &Path, libs: &[PathBuf], spec: &ImageSpec) -> Vec<(String, PathBuf, u32)> {
    let mut files = vec![(
        spec.binary_path.trim_start_matches('/').to_owned(),
        binary.to_path_buf(),
        0o755,
    )];
    for lib in libs {
        files.push((
            lib.to_string_lossy().trim_start_matches('/').to_owned(),
            lib.clone(),
            0o755,
        ));
    }
    files.push((
        "etc/ssl/certs/ca-certificates.crt".into(),
        PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        0o644,
    ));
    files
}

/// Small files written into the image (not copied from the host).
fn generated_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{UID}:{UID}:nonroot:/home/nonroot:/sbin/nologin\n"
            ),
        ),
        ("etc/group", format!("root:x:0:\nnonroot:x:{UID}:\n")),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n".to_owned(),
        ),
    ]
}

/// Prefixes of the variables cargo sets for the package it runs (see [`run_image`]).
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// `name` as found in this process's PATH (the checks run programs with an empty environment).
fn in_path(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in PATH"))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Runs a command; returns stdout; fails with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// buildah with the project's own storage (vfs: no kernel overlay or fuse needed).
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"));
        c
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(run(self.cmd().args(args))?.trim().to_owned())
    }
}

fn ensure_buildah(root: &Path) -> anyhow::Result<()> {
    if Command::new("buildah").arg("--version").output().is_ok() {
        return Ok(());
    }
    let script = root.join("scripts/install-buildah.sh");
    eprintln!("image: buildah missing, running {}", script.display());
    run(Command::new("bash").arg(&script))?;
    Ok(())
}

/// Runs `cargo xtask image`.
pub fn run_image(args: &Args, root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = ImageSpec::operator();
    let dockerfile = parse_dockerfile(&std::fs::read_to_string(root.join("Dockerfile"))?)?;
    ensure!(
        dockerfile == spec,
        "the Dockerfile and `cargo xtask image` describe different images:\n  Dockerfile: \
         {dockerfile:?}\n  xtask:      {spec:?}"
    );
    let target = target_dir(root);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // The same command, profile and target directory as `cargo xtask bench`, so the
            // release build is shared.
            let mut build = Command::new(cargo);
            build
                .args(["build", "--release", "--locked", "-p", "tikv-operator"])
                .current_dir(root);
            // `cargo xtask` runs this process with the variables cargo sets for a package
            // (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Some build scripts track them (ring's does
            // CARGO_MANIFEST_DIR), so passing them on would make this build differ from a plain
            // `cargo build --release` and each would rebuild the whole tree after the other.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if CARGO_RUN_VARS.iter().any(|p| key.starts_with(p)) {
                    build.env_remove(&*key);
                }
            }
            let status = build.status().context("running cargo build")?;
            ensure!(status.success(), "cargo build --release failed ({status})");
            target.join("release/tikv-operator")
        }
    };
    let built = started.elapsed();
    ensure!(binary.is_file(), "{} is not a file", binary.display());
    ensure_buildah(root)?;

    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let libs = parse_ldd(&format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    ))?;
    let files = image_files(&binary, &libs, &spec);

    let work = target.join("image");
    let rootfs = work.join("rootfs");
    let storage = work.join("buildah");
    for dir in [&rootfs, &storage] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&rootfs)?;
    stage(&rootfs, &files)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| work.join("tikv-operator.oci.tar"));
    if output.exists() {
        std::fs::remove_file(&output)?;
    }

    let buildah = Buildah { root: storage };
    let result = build_and_check(&buildah, &spec, &rootfs, &output, &work, &files);
    // The storage holds full copies of the image (vfs); the archive is what is kept.
    let _ = std::fs::remove_dir_all(&buildah.root);
    let summary = result?;
    let size = std::fs::metadata(&output)?.len();
    println!(
        "image: {} ({:.1} MiB, manifest {}), {} files; binary ready after {:.1}s, image built \
         and checked after {:.1}s",
        output.display(),
        size as f64 / (1024.0 * 1024.0),
        summary,
        files.len() + generated_files().len(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn stage(rootfs: &Path, files: &[(String, PathBuf, u32)]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let write = |rel: &str, mode: u32, content: &[u8]| -> anyhow::Result<()> {
        let path = rootfs.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for (rel, src, mode) in files {
        // Symbolic links (the loader's usual path) are copied as the file they point to.
        let content = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        write(rel, *mode, &content)?;
    }
    for (rel, content) in generated_files() {
        write(rel, 0o644, content.as_bytes())?;
    }
    Ok(())
}

fn build_and_check(
    b: &Buildah,
    spec: &ImageSpec,
    rootfs: &Path,
    output: &Path,
    work: &Path,
    files: &[(String, PathBuf, u32)],
) -> anyhow::Result<String> {
    let ctr = b.run(&["from", "--name", "tikv-operator-image-build", "scratch"])?;
    let mut src = rootfs.as_os_str().to_owned();
    src.push("/.");
    run(b
        .cmd()
        .args(["copy", "--chown", "0:0", &ctr])
        .arg(src)
        .arg("/"))?;
    let mut config = b.cmd();
    config.args([
        "config", "--os", "linux", "--arch", "amd64", "--user", &spec.user,
    ]);
    // The history entry would otherwise name /bin/sh, which the image does not have.
    config.args(["--created-by", "cargo xtask image"]);
    config
        .arg("--entrypoint")
        .arg(serde_json::to_string(&spec.entrypoint)?);
    config.arg("--cmd").arg(serde_json::to_string(&spec.cmd)?);
    for port in &spec.exposed_ports {
        config.arg("--port").arg(port);
    }
    for (k, v) in &spec.labels {
        config.arg("--label").arg(format!("{k}={v}"));
    }
    run(config.arg(&ctr))?;
    let reference = format!(
        "oci-archive:{}:tikv-operator:{}",
        output.display(),
        env!("CARGO_PKG_VERSION")
    );
    // No builder label and a fixed creation time: the image is the same for the same binary.
    run(b.cmd().args([
        "commit",
        "--quiet",
        "--format",
        "oci",
        "--identity-label=false",
        "--timestamp",
        "0",
        "--rm",
        &ctr,
        &reference,
    ]))?;

    let manifest = check_archive(spec, output, &work.join("check"), files)?;
    check_runs(b, spec, output)?;
    Ok(manifest)
}

/// Reads the OCI archive back and checks its config and its one layer. Returns the manifest
/// digest.
fn check_archive(
    spec: &ImageSpec,
    archive: &Path,
    dir: &Path,
    files: &[(String, PathBuf, u32)],
) -> anyhow::Result<String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir))?;
    let read_json = |path: PathBuf| -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let blob = |digest: &serde_json::Value| -> anyhow::Result<PathBuf> {
        let d = digest.as_str().context("digest is not a string")?;
        let hex = d.strip_prefix("sha256:").context("not a sha256 digest")?;
        Ok(dir.join("blobs/sha256").join(hex))
    };
    let index = read_json(dir.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    ensure!(
        manifests.len() == 1,
        "expected one manifest, got {}",
        manifests.len()
    );
    let manifest_digest = manifests[0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let manifest = read_json(blob(&manifests[0]["digest"])?)?;
    let config = read_json(blob(&manifest["config"]["digest"])?)?;
    verify_config(spec, &config)?;

    let layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?;
    ensure!(
        layers.len() == 1,
        "expected one layer, got {}",
        layers.len()
    );
    let listing = run(Command::new("tar")
        .args(["--list", "--verbose", "--numeric-owner", "-f"])
        .arg(blob(&layers[0]["digest"])?))?;
    let mut want: BTreeSet<String> = files.iter().map(|(rel, _, _)| rel.clone()).collect();
    want.extend(generated_files().iter().map(|(rel, _)| (*rel).to_owned()));
    verify_layer(spec, &listing, &want)?;
    Ok(manifest_digest)
}

/// The image config says what the spec says: non-root numeric user, exec-form entrypoint and
/// command, the labels and ports, and no environment that would need a shell.
pub fn verify_config(spec: &ImageSpec, config: &serde_json::Value) -> anyhow::Result<()> {
    let c = &config["config"];
    let user = c["User"].as_str().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    ensure!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "image user {user:?} is not a numeric non-root uid"
    );
    ensure!(
        user == spec.user,
        "image user {user:?}, expected {:?}",
        spec.user
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    ensure!(
        strings(&c["Entrypoint"]) == spec.entrypoint,
        "entrypoint {:?}, expected {:?}",
        c["Entrypoint"],
        spec.entrypoint
    );
    ensure!(
        strings(&c["Cmd"]) == spec.cmd,
        "cmd {:?}, expected {:?}",
        c["Cmd"],
        spec.cmd
    );
    let labels: BTreeMap<String, String> = c["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    ensure!(
        labels == spec.labels,
        "labels {labels:?}, expected {:?}",
        spec.labels
    );
    let ports: BTreeSet<String> = c["ExposedPorts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    ensure!(
        ports == spec.exposed_ports,
        "exposed ports {ports:?}, expected {:?}",
        spec.exposed_ports
    );
    ensure!(
        c["Shell"].is_null(),
        "the image names a shell: {}",
        c["Shell"]
    );
    ensure!(
        config["os"] == "linux" && config["architecture"] == "amd64",
        "platform {}/{}",
        config["os"],
        config["architecture"]
    );
    Ok(())
}

/// The layer (`tar --list --verbose --numeric-owner`) holds exactly `want` as regular files
/// (plus their directories), all owned by root and readable by the image's user, the
/// entrypoint executable by it, and no shell.
pub fn verify_layer(
    spec: &ImageSpec,
    listing: &str,
    want: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let mut files = BTreeMap::new();
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        ensure!(cols.len() >= 6, "unexpected tar listing line: {line}");
        let (mode, owner, name) = (cols[0], cols[1], cols[5..].join(" "));
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        ensure!(owner == "0/0", "{name} is owned by {owner}, not root");
        let base = name.rsplit('/').next().unwrap_or_default();
        ensure!(
            !["sh", "bash", "dash", "ash", "busybox"].contains(&base),
            "the image contains a shell: {name}"
        );
        match mode.chars().next() {
            Some('d') => {}
            Some('-') => {
                files.insert(name, mode.to_owned());
            }
            _ => bail!("unexpected entry (not a file or directory): {line}"),
        }
    }
    let have: BTreeSet<String> = files.keys().cloned().collect();
    ensure!(
        &have == want,
        "the layer's files differ from what was staged:\n  extra: {:?}\n  missing: {:?}",
        have.difference(want).collect::<Vec<_>>(),
        want.difference(&have).collect::<Vec<_>>()
    );
    for (name, mode) in &files {
        ensure!(
            mode.as_bytes().get(7) == Some(&b'r'),
            "{name} is not readable by the image's user ({mode})"
        );
    }
    let entry = spec.entrypoint[0].trim_start_matches('/');
    let mode = files
        .get(entry)
        .with_context(|| format!("the entrypoint {entry} is not in the image"))?;
    ensure!(
        mode.as_bytes().get(9) == Some(&b'x'),
        "the entrypoint is not executable by the image's user ({mode})"
    );
    Ok(())
}

/// Runs the binary from the image's own filesystem: a container made from the archive (not
/// from the build container), mounted, and `chroot` into it as the image's user with an empty
/// environment. `chroot` executes the binary directly: no shell is involved.
fn check_runs(b: &Buildah, spec: &ImageSpec, archive: &Path) -> anyhow::Result<()> {
    ensure!(
        run(Command::new("id").arg("-u"))?.trim() == "0",
        "checking the image needs root (buildah mount and chroot)"
    );
    let ctr = b.run(&[
        "from",
        "--name",
        "tikv-operator-image-check",
        "--pull-never",
        &format!("oci-archive:{}", archive.display()),
    ])?;
    let result = (|| -> anyhow::Result<()> {
        let mnt = b.run(&["mount", &ctr])?;
        let chroot = in_path("chroot")?;
        let exec = |arg: &str| -> anyhow::Result<String> {
            run(Command::new(&chroot)
                .arg(format!("--userspec={}", spec.user))
                .arg(&mnt)
                .arg(&spec.entrypoint[0])
                .arg(arg)
                .env_clear())
        };
        let version = exec("version")?;
        let want = format!("tikv-operator {}\n", env!("CARGO_PKG_VERSION"));
        ensure!(
            version == want,
            "`version` printed {version:?}, expected {want:?}"
        );
        let crds = exec("crd")?;
        ensure!(
            crds == tikv_operator_api::render_all_crds_yaml()?,
            "`crd` from the image differs from the CRDs this tree generates"
        );
        println!(
            "image: `tikv-operator version` and `tikv-operator crd` ran from the image as uid {}",
            UID
        );
        b.run(&["umount", &ctr])?;
        Ok(())
    })();
    let removed = b.run(&["rm", &ctr]);
    result?;
    removed?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_dockerfile_describes_the_image_xtask_builds() {
        let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
        let parsed = parse_dockerfile(&text).unwrap();
        assert_eq!(parsed, ImageSpec::operator());
    }

    #[test]
    fn dockerfile_parsing_sees_a_change_of_each_field() {
        let base = "FROM x AS build\nUSER 1:1\nFROM y\nCOPY --from=build /out/tikv-operator /usr/local/bin/tikv-operator\n\
                    USER 65532:65532\nEXPOSE 8080\nLABEL a=\"x y\" \\\n  b=c\nENTRYPOINT [\"/usr/local/bin/tikv-operator\"]\nCMD [\"run\"]\n";
        let spec = parse_dockerfile(base).unwrap();
        assert_eq!(spec.user, "65532:65532");
        assert_eq!(spec.binary_path, "/usr/local/bin/tikv-operator");
        assert_eq!(spec.entrypoint, ["/usr/local/bin/tikv-operator"]);
        assert_eq!(spec.cmd, ["run"]);
        assert_eq!(spec.exposed_ports, BTreeSet::from(["8080/tcp".to_owned()]));
        assert_eq!(spec.labels["a"], "x y");
        assert_eq!(spec.labels["b"], "c");
        for (from, to) in [
            ("USER 65532:65532", "USER 0:0"),
            ("EXPOSE 8080", "EXPOSE 8080 9090"),
            ("b=c", "b=d"),
            ("[\"run\"]", "[\"run\", \"--x\"]"),
            ("/usr/local/bin/tikv-operator\n", "/bin/tikv-operator\n"),
        ] {
            let changed = parse_dockerfile(&base.replace(from, to)).unwrap();
            assert_ne!(changed, spec, "{from} -> {to}");
        }
        assert!(parse_dockerfile("FROM y\nENTRYPOINT /bin/x\n").is_err());
    }

    #[test]
    fn ldd_output_is_read_into_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(
            parse_ldd("\tnot a dynamic executable\n")
                .unwrap()
                .is_empty()
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("garbage\n").is_err());
    }

    fn good_config() -> serde_json::Value {
        let spec = ImageSpec::operator();
        serde_json::json!({
            "os": "linux",
            "architecture": "amd64",
            "config": {
                "User": spec.user,
                "Entrypoint": spec.entrypoint,
                "Cmd": spec.cmd,
                "Labels": spec.labels,
                "ExposedPorts": {"8080/tcp": {}},
            }
        })
    }

    #[test]
    fn config_check_refuses_root_other_entrypoints_labels_and_shells() {
        let spec = ImageSpec::operator();
        verify_config(&spec, &good_config()).unwrap();
        let cases: [(&str, serde_json::Value); 6] = [
            ("User", "0:0".into()),
            ("User", "nonroot".into()),
            ("Entrypoint", serde_json::json!(["/bin/sh", "-c"])),
            ("Labels", serde_json::json!({"io.buildah.version": "1"})),
            ("ExposedPorts", serde_json::json!({})),
            ("Shell", serde_json::json!(["/bin/sh", "-c"])),
        ];
        for (field, value) in cases {
            let mut c = good_config();
            c["config"][field] = value.clone();
            assert!(verify_config(&spec, &c).is_err(), "{field} = {value}");
        }
    }

    #[test]
    fn layer_check_wants_exactly_the_staged_files_and_no_shell() {
        let spec = ImageSpec::operator();
        let want: BTreeSet<String> = ["usr/local/bin/tikv-operator", "etc/passwd"]
            .map(str::to_owned)
            .into();
        let ok = "drwxr-xr-x 0/0 0 1970-01-01 00:00 ./\n\
                  drwxr-xr-x 0/0 0 1970-01-01 00:00 ./usr/\n\
                  -rwxr-xr-x 0/0 9 1970-01-01 00:00 ./usr/local/bin/tikv-operator\n\
                  -rw-r--r-- 0/0 9 1970-01-01 00:00 ./etc/passwd\n";
        verify_layer(&spec, ok, &want).unwrap();
        let shell = format!("{ok}-rwxr-xr-x 0/0 9 1970-01-01 00:00 ./bin/sh\n");
        assert!(
            verify_layer(&spec, &shell, &want)
                .unwrap_err()
                .to_string()
                .contains("shell")
        );
        let extra = format!("{ok}-rw-r--r-- 0/0 9 1970-01-01 00:00 ./etc/extra\n");
        assert!(verify_layer(&spec, &extra, &want).is_err());
        let owned = ok.replace("-rw-r--r-- 0/0", "-rw-r--r-- 1000/1000");
        assert!(verify_layer(&spec, &owned, &want).is_err());
        let private = ok.replace("-rwxr-xr-x 0/0 9", "-rwx------ 0/0 9");
        assert!(verify_layer(&spec, &private, &want).is_err());
        let link = format!("{ok}lrwxrwxrwx 0/0 0 1970-01-01 00:00 ./lib -> usr/lib\n");
        assert!(verify_layer(&spec, &link, &want).is_err());
    }
}
