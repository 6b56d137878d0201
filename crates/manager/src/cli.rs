//! Command line: subcommands, the flags of `run` (each with an environment variable), and their
//! validation into [`Settings`]. Everything here is pure: no client, no network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use tikv_operator_controller::{Config, PdEndpoint, PdSettings, RefreshPolicy, TikvSettings};

/// Runs TiKV clusters (PD + TiKV) on Kubernetes.
///
/// Without a subcommand, `run` is assumed (its flags may be given at the top level).
#[derive(Debug, Parser)]
#[command(
    name = "tikv-operator",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `run` when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The subcommand to execute (`run` with the top-level flags when none was given).
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start")]
pub enum Command {
    /// Run the operator (the default).
    Run(RunArgs),
    /// Print every CustomResourceDefinition of the core.tikv.org API as YAML
    /// (install with `tikv-operator crd | kubectl apply --server-side -f -`).
    Crd,
    /// Print the version.
    Version,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `run`. Every flag is documented in docs/configuration.md (a test checks it).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kubeconfig file. Without it: the in-cluster ServiceAccount, else ~/.kube/config.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace to watch (repeatable; the environment variable takes a comma-separated list).
    /// None: all namespaces.
    #[arg(
        long = "namespace",
        env = "TIKV_OPERATOR_NAMESPACES",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Elect a leader over a coordination.k8s.io Lease; only the leader runs the controllers.
    #[arg(
        long,
        env = "TIKV_OPERATOR_LEADER_ELECT",
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "TIKV_OPERATOR_LEADER_ELECT_LEASE_NAME",
        value_name = "NAME",
        default_value = "tikv-operator"
    )]
    pub leader_elect_lease_name: String,

    /// Namespace of the leader election Lease.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "default"
    )]
    pub leader_elect_namespace: String,

    /// How long a Lease is valid after its last renewal; a standby takes over after it.
    #[arg(long, env = "TIKV_OPERATOR_LEADER_ELECT_LEASE_DURATION", value_name = "DURATION",
          default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// The leader stops (and exits) when it could not renew the Lease for this long.
    #[arg(long, env = "TIKV_OPERATOR_LEADER_ELECT_RENEW_DEADLINE", value_name = "DURATION",
          default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// Interval between attempts to acquire or renew the Lease.
    #[arg(long, env = "TIKV_OPERATOR_LEADER_ELECT_RETRY_PERIOD", value_name = "DURATION",
          default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,

    /// Identity written into the Lease. Default: the pod name, else hostname plus a random suffix.
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub leader_elect_identity: Option<String>,

    /// Address of the HTTP server (/healthz, /readyz, /metrics), `IP:PORT`.
    #[arg(
        long,
        env = "TIKV_OPERATOR_HTTP_BIND_ADDRESS",
        value_name = "IP:PORT",
        default_value = "0.0.0.0:8080",
        value_parser = parse_bind_address
    )]
    pub http_bind_address: SocketAddr,

    /// Log format.
    #[arg(
        long,
        env = "TIKV_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,tikv_operator=debug`). RUST_LOG, when
    /// set, takes precedence.
    #[arg(
        long,
        env = "TIKV_OPERATOR_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Maximum concurrent reconciles per controller (0: unbounded).
    #[arg(
        long,
        env = "TIKV_OPERATOR_CONCURRENCY",
        value_name = "N",
        default_value_t = 4
    )]
    pub concurrency: u16,

    /// Timeout of one PD request.
    #[arg(long, env = "TIKV_OPERATOR_PD_TIMEOUT", value_name = "DURATION",
          default_value = "5s", value_parser = parse_duration)]
    pub pd_timeout: Duration,

    /// PD state refresh interval while an operation is in flight (scale-in, eviction, bootstrap).
    #[arg(long, env = "TIKV_OPERATOR_PD_REFRESH_FAST", value_name = "DURATION",
          default_value = "1s", value_parser = parse_duration)]
    pub pd_refresh_fast: Duration,

    /// PD state refresh interval at rest.
    #[arg(long, env = "TIKV_OPERATOR_PD_REFRESH_SLOW", value_name = "DURATION",
          default_value = "30s", value_parser = parse_duration)]
    pub pd_refresh_slow: Duration,

    /// URL template to reach PD from outside the cluster; `{cluster}`, `{namespace}` and
    /// `{group}` are replaced. Default: the PD client Service's cluster DNS name.
    #[arg(long, env = "TIKV_OPERATOR_PD_ENDPOINT_TEMPLATE", value_name = "URL")]
    pub pd_endpoint_template: Option<String>,

    /// How long a TiKV store being scaled in may take to move its Region leaders away before
    /// PD is asked to remove the store anyway.
    #[arg(long, env = "TIKV_OPERATOR_TIKV_EVICT_LEADER_TIMEOUT", value_name = "DURATION",
          default_value = "5m", value_parser = parse_duration)]
    pub tikv_evict_leader_timeout: Duration,

    /// Test only, hidden: `NAME=VALUE` environment variables added to the main container of
    /// every PD and TiKV Pod the operator renders. End-to-end tests use it to run an operator
    /// whose rendering differs harmlessly from the previous one and check that the upgrade
    /// restarts no Pod: it is never part of a Pod's revision, so running Pods keep their spec
    /// and only new Pods get it. Not for production use.
    #[arg(
        long,
        env = "TIKV_OPERATOR_TEST_EXTRA_POD_ENV",
        value_name = "NAME=VALUE",
        value_delimiter = ',',
        hide = true
    )]
    pub test_extra_pod_env: Vec<String>,
}

/// Parses a human-readable duration: one or more `<integer><unit>` parts with units `ms`, `s`,
/// `m`, `h` (e.g. `15s`, `2m`, `1m30s`, `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (examples: 15s, 2m, 500ms)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}`: expected a number before `{rest}` (examples: 15s, 2m, 500ms)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => n
                .checked_mul(60)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "h" => n
                .checked_mul(3600)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "" => {
                return Err(format!(
                    "`{text}`: missing unit after {n} (one of ms, s, m, h)"
                ));
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (one of ms, s, m, h)"
                ));
            }
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("`{text}`: duration too large"))?;
    }
    Ok(total)
}

/// Parses `IP:PORT` (IPv6 as `[::]:8080`).
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "`{text}` is not an IP:PORT address (examples: 0.0.0.0:8080, 127.0.0.1:9090, [::]:8080)"
        )
    })
}

/// Leader election settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease validity after a renewal.
    pub lease_duration: Duration,
    /// Give up leadership when renewal fails for this long.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts.
    pub retry_period: Duration,
}

/// Validated settings of `run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kubeconfig file (None: inferred).
    pub kubeconfig: Option<PathBuf>,
    /// Leader election (None: off).
    pub leader_election: Option<LeaderElection>,
    /// HTTP bind address.
    pub http_bind_address: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directive.
    pub log_level: String,
    /// What the controllers get.
    pub controller: Config,
    /// Test only: environment variables added to every rendered PD and TiKV container
    /// (`--test-extra-pod-env`).
    pub test_extra_pod_env: Vec<(String, String)>,
}

/// A configuration error, with a message that names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--kubeconfig` names a missing file.
    #[error("--kubeconfig {0}: no such file")]
    KubeconfigMissing(PathBuf),
    /// `--kubeconfig` names something that is not a file.
    #[error("--kubeconfig {0}: not a regular file")]
    KubeconfigNotFile(PathBuf),
    /// Lease timings that cannot work.
    #[error(
        "inconsistent leader election timings: {0} (needed: retry period < renew deadline < lease duration)"
    )]
    LeaseTimings(String),
    /// A value that is empty or malformed.
    #[error("{flag}: {message}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        message: message.into(),
    }
}

/// A DNS-1123 label (namespace names): lowercase alphanumerics and `-`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (Lease names).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl RunArgs {
    /// Validates the flags. `default_identity` supplies the identity when none was given (it
    /// reads the hostname and draws a random suffix, so it is passed in).
    pub fn validate(
        &self,
        default_identity: impl FnOnce() -> String,
    ) -> Result<Settings, ConfigError> {
        if let Some(path) = &self.kubeconfig {
            match std::fs::metadata(path) {
                Err(_) => return Err(ConfigError::KubeconfigMissing(path.clone())),
                Ok(m) if !m.is_file() => return Err(ConfigError::KubeconfigNotFile(path.clone())),
                Ok(_) => {}
            }
        }
        let mut namespaces: Vec<String> = Vec::new();
        for ns in &self.namespaces {
            let ns = ns.trim();
            if !is_dns_label(ns) {
                return Err(invalid(
                    "--namespace",
                    format!("`{ns}` is not a valid namespace name"),
                ));
            }
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_owned());
            }
        }
        let leader_election = if self.leader_elect {
            Some(self.leader_election(default_identity)?)
        } else {
            None
        };
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.log_level)
            .is_err()
        {
            return Err(invalid(
                "--log-level",
                format!(
                    "`{}` is not a valid filter (examples: info, debug, info,tikv_operator=debug)",
                    self.log_level
                ),
            ));
        }
        if self.pd_timeout.is_zero() {
            return Err(invalid("--pd-timeout", "must be greater than 0"));
        }
        if self.pd_refresh_fast.is_zero() {
            return Err(invalid("--pd-refresh-fast", "must be greater than 0"));
        }
        if self.pd_refresh_fast > self.pd_refresh_slow {
            return Err(invalid(
                "--pd-refresh-fast",
                format!(
                    "{:?} is longer than --pd-refresh-slow {:?}",
                    self.pd_refresh_fast, self.pd_refresh_slow
                ),
            ));
        }
        let endpoint = match &self.pd_endpoint_template {
            None => PdEndpoint::Service,
            Some(t) if t.starts_with("http://") || t.starts_with("https://") => {
                PdEndpoint::Template(t.clone())
            }
            Some(t) => {
                return Err(invalid(
                    "--pd-endpoint-template",
                    format!("`{t}` must start with http:// or https://"),
                ));
            }
        };
        let mut test_extra_pod_env = Vec::new();
        for var in &self.test_extra_pod_env {
            match var.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() => {
                    test_extra_pod_env.push((name.trim().to_owned(), value.to_owned()));
                }
                _ => {
                    return Err(invalid(
                        "--test-extra-pod-env",
                        format!("`{var}` is not NAME=VALUE"),
                    ));
                }
            }
        }
        Ok(Settings {
            test_extra_pod_env,
            kubeconfig: self.kubeconfig.clone(),
            leader_election,
            http_bind_address: self.http_bind_address,
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            controller: Config {
                namespaces,
                concurrency: self.concurrency,
                pd: PdSettings {
                    timeout: self.pd_timeout,
                    refresh: RefreshPolicy {
                        fast: self.pd_refresh_fast,
                        slow: self.pd_refresh_slow,
                    },
                    endpoint,
                },
                tikv: TikvSettings {
                    evict_leader_timeout: self.tikv_evict_leader_timeout,
                },
            },
        })
    }

    fn leader_election(
        &self,
        default_identity: impl FnOnce() -> String,
    ) -> Result<LeaderElection, ConfigError> {
        let (lease, renew, retry) = (
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        );
        if lease < Duration::from_secs(1) {
            return Err(ConfigError::LeaseTimings(format!(
                "--leader-elect-lease-duration {lease:?} is shorter than 1s"
            )));
        }
        if retry.is_zero() {
            return Err(ConfigError::LeaseTimings(
                "--leader-elect-retry-period must be greater than 0".into(),
            ));
        }
        if renew >= lease {
            return Err(ConfigError::LeaseTimings(format!(
                "--leader-elect-renew-deadline {renew:?} is not shorter than \
                 --leader-elect-lease-duration {lease:?}"
            )));
        }
        if retry >= renew {
            return Err(ConfigError::LeaseTimings(format!(
                "--leader-elect-retry-period {retry:?} is not shorter than \
                 --leader-elect-renew-deadline {renew:?}"
            )));
        }
        if !is_dns_subdomain(&self.leader_elect_lease_name) {
            return Err(invalid(
                "--leader-elect-lease-name",
                format!(
                    "`{}` is not a valid object name",
                    self.leader_elect_lease_name
                ),
            ));
        }
        if !is_dns_label(&self.leader_elect_namespace) {
            return Err(invalid(
                "--leader-elect-namespace",
                format!(
                    "`{}` is not a valid namespace name",
                    self.leader_elect_namespace
                ),
            ));
        }
        let identity = match &self.leader_elect_identity {
            Some(id) if id.trim().is_empty() => {
                return Err(invalid("--leader-elect-identity", "must not be empty"));
            }
            Some(id) => id.trim().to_owned(),
            None => default_identity(),
        };
        Ok(LeaderElection {
            lease_name: self.leader_elect_lease_name.clone(),
            namespace: self.leader_elect_namespace.clone(),
            identity,
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Parses `run` flags with no environment fallbacks in play for the flags under test
    /// (tests pass every flag they check explicitly).
    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tikv-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.into_command() {
            Command::Run(run) => Ok(run),
            other => panic!("expected run, got {other:?}"),
        }
    }

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        parse(args).unwrap().validate(|| "generated-id".into())
    }

    fn err(args: &[&str]) -> String {
        settings(args).unwrap_err().to_string()
    }

    fn clap_err(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s"), Ok(secs(15)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 3s "), Ok(secs(3)));
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("15").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("15x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn the_hidden_test_extra_pod_env_flag_parses_name_value_pairs() {
        let s = settings(&["--leader-elect=false"]).unwrap();
        assert!(s.test_extra_pod_env.is_empty());
        let s = settings(&["--leader-elect=false", "--test-extra-pod-env", "A=1,B=x=y"]).unwrap();
        assert_eq!(
            s.test_extra_pod_env,
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert!(
            err(&["--leader-elect=false", "--test-extra-pod-env", "nope"]).contains("NAME=VALUE")
        );
        // Not shown to users.
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("test-extra-pod-env"));
    }

    #[test]
    fn defaults() {
        let s = settings(&["--leader-elect-identity", "me"]).unwrap();
        assert_eq!(s.http_bind_address, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.controller.concurrency, 4);
        assert_eq!(s.controller.pd.timeout, secs(5));
        assert_eq!(s.controller.pd.refresh.fast, secs(1));
        assert_eq!(s.controller.pd.refresh.slow, secs(30));
        assert_eq!(s.controller.pd.endpoint, PdEndpoint::Service);
        let le = s.leader_election.unwrap();
        assert_eq!(le.lease_name, "tikv-operator");
        assert_eq!(le.identity, "me");
        assert_eq!(le.lease_duration, secs(15));
        assert_eq!(le.renew_deadline, secs(10));
        assert_eq!(le.retry_period, secs(2));
    }

    #[test]
    fn what_the_e2e_harness_passes_parses() {
        let kc = std::env::temp_dir().join(format!("mgr-cli-kc-{}", std::process::id()));
        std::fs::write(&kc, "apiVersion: v1\nkind: Config\n").unwrap();
        let s = settings(&[
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--http-bind-address",
            "127.0.0.1:18080",
            "--leader-elect=false",
            "--namespace",
            "a",
            "--namespace",
            "b,c",
            "--namespace",
            "a",
        ])
        .unwrap();
        std::fs::remove_file(&kc).unwrap();
        assert_eq!(s.kubeconfig.as_deref(), Some(kc.as_path()));
        assert!(s.leader_election.is_none());
        assert_eq!(s.http_bind_address, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(s.controller.namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn a_repeated_flag_overrides_and_namespaces_accumulate() {
        // The e2e harness passes its defaults first and a test's extra arguments after them.
        let run = parse(&[
            "--kubeconfig",
            "/first",
            "--leader-elect=false",
            "--namespace",
            "a",
            "--kubeconfig",
            "/second",
            "--leader-elect=true",
            "--namespace",
            "b",
        ])
        .unwrap();
        assert_eq!(
            run.kubeconfig.as_deref(),
            Some(std::path::Path::new("/second"))
        );
        assert!(run.leader_elect);
        assert_eq!(run.namespaces, ["a", "b"]);
    }

    #[test]
    fn leader_elect_forms() {
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect=true"]).unwrap().leader_elect);
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(clap_err(&["--leader-elect=maybe"]).contains("--leader-elect"));
    }

    #[test]
    fn no_subcommand_means_run_with_top_level_flags() {
        let cli = Cli::try_parse_from(["tikv-operator", "--leader-elect=false"]).unwrap();
        match cli.into_command() {
            Command::Run(run) => assert!(!run.leader_elect),
            other => panic!("expected run, got {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["tikv-operator"])
                .unwrap()
                .into_command(),
            Command::Run(_)
        ));
    }

    #[test]
    fn all_flags_parse() {
        let s = settings(&[
            "--leader-elect-lease-name",
            "ops.lease",
            "--leader-elect-namespace",
            "ops",
            "--leader-elect-lease-duration",
            "1m",
            "--leader-elect-renew-deadline",
            "40s",
            "--leader-elect-retry-period",
            "5s",
            "--leader-elect-identity",
            "pod-1",
            "--log-format",
            "json",
            "--log-level",
            "debug,kube=info",
            "--concurrency",
            "16",
            "--pd-timeout",
            "3s",
            "--pd-refresh-fast",
            "500ms",
            "--pd-refresh-slow",
            "1m",
            "--pd-endpoint-template",
            "http://{group}-pd.{namespace}.example:2379",
        ])
        .unwrap();
        assert_eq!(
            s.leader_election,
            Some(LeaderElection {
                lease_name: "ops.lease".into(),
                namespace: "ops".into(),
                identity: "pod-1".into(),
                lease_duration: secs(60),
                renew_deadline: secs(40),
                retry_period: secs(5),
            })
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_level, "debug,kube=info");
        assert_eq!(s.controller.concurrency, 16);
        assert_eq!(s.controller.pd.timeout, secs(3));
        assert_eq!(s.controller.pd.refresh.fast, Duration::from_millis(500));
        assert_eq!(s.controller.pd.refresh.slow, secs(60));
        assert_eq!(
            s.controller.pd.endpoint,
            PdEndpoint::Template("http://{group}-pd.{namespace}.example:2379".into())
        );
    }

    #[test]
    fn default_identity_is_used_without_the_flag() {
        let mut run = parse(&[]).unwrap();
        run.leader_elect_identity = None;
        let le = run
            .validate(|| "host-abc12".into())
            .unwrap()
            .leader_election
            .unwrap();
        assert_eq!(le.identity, "host-abc12");
    }

    #[test]
    fn nonexistent_kubeconfig_is_a_clear_error() {
        let e = err(&["--kubeconfig", "/nonexistent/dir/kubeconfig"]);
        assert_eq!(e, "--kubeconfig /nonexistent/dir/kubeconfig: no such file");
        let dir = std::env::temp_dir();
        let e = err(&["--kubeconfig", dir.to_str().unwrap()]);
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn bad_bind_address_is_a_clear_error() {
        for bad in ["8080", "localhost:8080", "0.0.0.0", "1.2.3.4:99999", ""] {
            let e = clap_err(&["--http-bind-address", bad]);
            assert!(
                e.contains("--http-bind-address") && e.contains("is not an IP:PORT address"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse(&["--http-bind-address", "[::1]:9000"])
                .unwrap()
                .http_bind_address,
            "[::1]:9000".parse().unwrap()
        );
    }

    #[test]
    fn bad_durations_are_clear_errors() {
        let e = clap_err(&["--leader-elect-lease-duration", "15"]);
        assert!(
            e.contains("--leader-elect-lease-duration") && e.contains("missing unit"),
            "{e}"
        );
        let e = clap_err(&["--pd-timeout", "fast"]);
        assert!(
            e.contains("--pd-timeout") && e.contains("expected a number"),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_lease_timings_are_rejected() {
        let e = err(&["--leader-elect-renew-deadline", "15s"]);
        assert!(
            e.contains("inconsistent leader election timings")
                && e.contains("--leader-elect-renew-deadline 15s is not shorter than --leader-elect-lease-duration 15s"),
            "{e}"
        );
        let e = err(&["--leader-elect-retry-period", "10s"]);
        assert!(
            e.contains("--leader-elect-retry-period 10s is not shorter than"),
            "{e}"
        );
        let e = err(&["--leader-elect-retry-period", "0s"]);
        assert!(e.contains("greater than 0"), "{e}");
        let e = err(&[
            "--leader-elect-lease-duration",
            "500ms",
            "--leader-elect-renew-deadline",
            "200ms",
            "--leader-elect-retry-period",
            "100ms",
        ]);
        assert!(e.contains("shorter than 1s"), "{e}");
        // Without leader election the timings do not matter.
        assert!(
            settings(&[
                "--leader-elect=false",
                "--leader-elect-renew-deadline",
                "1h"
            ])
            .is_ok()
        );
    }

    #[test]
    fn other_bad_values_are_rejected() {
        assert!(err(&["--namespace", "Bad_NS"]).starts_with("--namespace: `Bad_NS`"));
        assert!(err(&["--leader-elect-namespace", "x/y"]).starts_with("--leader-elect-namespace"));
        assert!(err(&["--leader-elect-lease-name", "A"]).starts_with("--leader-elect-lease-name"));
        assert!(err(&["--leader-elect-identity", " "]).contains("must not be empty"));
        assert!(err(&["--log-level", "info,[[["]).starts_with("--log-level"));
        assert!(err(&["--pd-timeout", "0s"]).starts_with("--pd-timeout"));
        assert!(
            err(&["--pd-refresh-fast", "1m", "--pd-refresh-slow", "30s"])
                .contains("longer than --pd-refresh-slow")
        );
        assert!(err(&["--pd-endpoint-template", "pd:2379"]).contains("http://"));
        assert!(clap_err(&["--log-format", "xml"]).contains("--log-format"));
        assert!(clap_err(&["--concurrency=-1"]).contains("--concurrency"));
    }

    #[test]
    fn unknown_subcommand_is_an_error() {
        assert!(Cli::try_parse_from(["tikv-operator", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["tikv-operator", "run", "--frobnicate"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every flag of `run` (and its environment variable) is in docs/configuration.md.
    #[test]
    fn every_run_flag_is_documented() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let cmd = RunArgs::augment_args(clap::Command::new("run"));
        let mut checked = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // Hidden flags are test-only and not for users.
            if arg.is_hide_set() {
                continue;
            }
            let flag = format!("`--{long}`");
            assert!(
                doc.contains(&flag),
                "{flag} missing from {}",
                path.display()
            );
            if let Some(env) = arg.get_env() {
                let env = format!("`{}`", env.to_string_lossy());
                assert!(
                    doc.contains(&env),
                    "{env} (of --{long}) missing from {}",
                    path.display()
                );
            }
            for default in arg.get_default_values() {
                let row = doc
                    .lines()
                    .find(|l| l.starts_with(&format!("| {flag} |")))
                    .unwrap_or_default();
                let default = format!("`{}`", default.to_string_lossy());
                assert!(
                    row.contains(&default),
                    "default {default} of --{long} missing from its row in {}",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 17, "only {checked} flags found");
    }
}
