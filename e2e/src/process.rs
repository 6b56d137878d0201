//! Detached processes with pid files, and stopping them by pid.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Starts `cmd` in its own process group, with stdout and stderr appended to `log`, and records
/// its pid in `<pids>/<name>.pid`. The process outlives the caller.
pub fn spawn_detached(pids: &Path, name: &str, log: &Path, cmd: &mut Command) -> Result<u32> {
    fs::create_dir_all(pids)?;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    fs::write(pid_file(pids, name), pid.to_string())?;
    Ok(pid)
}

/// Path of the pid file of `name`.
pub fn pid_file(pids: &Path, name: &str) -> PathBuf {
    pids.join(format!("{name}.pid"))
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

fn to_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().map(Pid::from_raw)
}

/// Stops the process `pid` and its process group: SIGTERM, then SIGKILL after `grace`.
pub fn stop_pid(pid: u32, grace: Duration) {
    let Some(p) = to_pid(pid) else { return };
    if !is_alive(pid) {
        return;
    }
    // Every process we start leads its own group; signal the group so helpers die too.
    if killpg(p, Signal::SIGTERM).is_err() {
        let _ = kill(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if killpg(p, Signal::SIGKILL).is_err() {
        let _ = kill(p, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && is_alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// All pid files in `pids`, as (name, pid).
pub fn list(pids: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(pids) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
        else {
            continue;
        };
        if let Some(pid) = read_pid(&path) {
            out.push((name.to_string(), pid));
        }
    }
    out.sort();
    out
}

/// Pids of live processes whose command line mentions `needle` (used by `env down` to find
/// anything left behind under the state directory).
pub fn find_by_cmdline(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && is_alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// The command line of a live process (program first).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// The last `lines` lines of a log file (for failure reports).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}
