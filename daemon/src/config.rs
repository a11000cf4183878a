//! `/etc/layerd/config.toml`: the daemon's one configuration file.
//!
//! Every key is optional; command-line flags override the file. Unknown keys are refused so a
//! typo does not silently leave a default in place. Keys:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `idle-exit-seconds` | integer | 60 | exit after this long with nothing to do (0: never); D-Bus activation starts layerd again |
//! | `wait-by-default` | bool | false | a change requested while another runs queues behind it instead of failing with Busy |
//! | `result-ttl-seconds` | integer | 300 | how long a finished transaction's result stays readable |
//! | `reboot-command` | array of strings | unset: systemd-logind's `Reboot` | run for `--reboot` requests instead of asking logind |
//! | `state-dir` | path | `/var/lib/layerd` | the transaction journal |
//! | `cache-dir` | path | `/var/cache/layerd` | repository metadata (`repomd/`) and solver caches (`solv/`) |
//! | `install-weak-deps` | bool | true | install the Recommends of repository packages, as dnf does |
//! | `grpc` | bool | false | serve the gRPC API on `grpc-socket` (always on when systemd passes the socket) |
//! | `grpc-socket` | path | `/run/layerd/layerd.sock` | the gRPC unix socket |
//! | `grpc-socket-mode` | string (octal) | `"0666"` | who may connect (reading is open to anyone who can) |
//! | `grpc-group` | group name or gid | unset | members may change the system over the socket (root always may); the socket's group |
//! | `grpc-tcp-listen` | `"addr:port"` | unset (off) | also serve on TCP, with mutual TLS (the three keys below are then required) |
//! | `grpc-tls-cert` | path | — | server certificate (PEM) |
//! | `grpc-tls-key` | path | — | its private key (PEM) |
//! | `grpc-tls-client-ca` | path | — | CA whose certificates clients must present (PEM) |

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/layerd/config.toml";

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub idle_exit_seconds: Option<u64>,
    pub wait_by_default: Option<bool>,
    pub result_ttl_seconds: Option<u64>,
    pub reboot_command: Option<Vec<String>>,
    pub state_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub install_weak_deps: Option<bool>,
    pub grpc: Option<bool>,
    pub grpc_socket: Option<PathBuf>,
    pub grpc_socket_mode: Option<String>,
    pub grpc_group: Option<String>,
    pub grpc_tcp_listen: Option<String>,
    pub grpc_tls_cert: Option<PathBuf>,
    pub grpc_tls_key: Option<PathBuf>,
    pub grpc_tls_client_ca: Option<PathBuf>,
}

/// Read the config file; a missing file means defaults, a malformed one is an error naming the
/// file and the place.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c: FileConfig = toml::from_str("idle-exit-seconds = 5\nwait-by-default = true\nreboot-command = [\"true\"]\n").unwrap();
        let g: FileConfig = toml::from_str("grpc = true\ngrpc-socket-mode = \"0660\"\ngrpc-group = \"wheel\"\ngrpc-tcp-listen = \"127.0.0.1:9555\"\n").unwrap();
        assert_eq!((g.grpc, g.grpc_group.as_deref()), (Some(true), Some("wheel")));
        assert_eq!(c.idle_exit_seconds, Some(5));
        assert_eq!(c.wait_by_default, Some(true));
        assert_eq!(c.reboot_command, Some(vec!["true".to_string()]));
        let e = toml::from_str::<FileConfig>("idle-exit-secs = 5\n").unwrap_err().to_string();
        assert!(e.contains("idle-exit-secs"), "{e}");
        assert_eq!(load(Path::new("/nonexistent/config.toml")).unwrap(), FileConfig::default());
    }

    #[test]
    fn the_shipped_config_names_only_keys_layerd_accepts() {
        let text = include_str!("../../packaging/config.toml");
        assert_eq!(toml::from_str::<FileConfig>(text).unwrap(), FileConfig::default(), "everything is commented out");
        // every `# key = value` line, uncommented
        let keys: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(keys.lines().count() >= 15, "{keys}");
        let all: FileConfig = toml::from_str(&keys).unwrap_or_else(|e| panic!("{e}\n{keys}"));
        assert_eq!(all.idle_exit_seconds, Some(60));
        assert_eq!(all.grpc_group.as_deref(), Some("layerd"));
    }
}
