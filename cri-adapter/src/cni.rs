//! CNI: the first network configuration in the conf dir (`.conflist`, `.conf` or
//! `.json`, by file name order, as the kubelet and containerd pick it), run through
//! the plugin binaries as the CNI spec says (environment + the config on stdin; a
//! conflist's plugins in order with `prevResult`, DEL in reverse order).

use crate::util;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of the CNI layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No configuration file.
    #[error("no CNI network configuration in {0}")]
    NoConfig(String),
    /// A configuration that is not a CNI configuration.
    #[error("{}: {reason}", path.display())]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A plugin binary is missing.
    #[error("CNI plugin {plugin:?} not found in {path}")]
    NoPlugin {
        /// The type.
        plugin: String,
        /// CNI_PATH.
        path: String,
    },
    /// A plugin failed.
    #[error("CNI {command} of plugin {plugin:?} failed: {message}")]
    Plugin {
        /// ADD or DEL.
        command: String,
        /// The type.
        plugin: String,
        /// Its error (stdout JSON or stderr).
        message: String,
    },
    /// Spawning failed.
    #[error("cannot run CNI plugin {plugin:?}")]
    Spawn {
        /// The type.
        plugin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A network configuration, normalized to the conflist shape.
#[derive(Clone, Debug)]
pub struct Network {
    /// Where it came from.
    pub file: PathBuf,
    /// `{name, cniVersion, plugins: [...]}`.
    pub list: Value,
}

/// Finds and loads the first network configuration in `dir`.
pub fn load(dir: &Path) -> Result<Network, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| Error::NoConfig(dir.display().to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
        })
        .collect();
    files.sort();
    let file = files
        .into_iter()
        .next()
        .ok_or_else(|| Error::NoConfig(dir.display().to_string()))?;
    let bad = |reason: String| Error::BadConfig {
        path: file.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let list = if v.get("plugins").is_some() {
        v
    } else {
        // A single-plugin .conf: a list of one.
        let mut plugin = v.clone();
        if let Some(o) = plugin.as_object_mut() {
            o.remove("name");
            o.remove("cniVersion");
        }
        json!({ "name": v["name"], "cniVersion": v["cniVersion"], "plugins": [plugin] })
    };
    if !list["name"].is_string() || !list["plugins"].is_array() {
        return Err(bad("no network name or plugins".into()));
    }
    Ok(Network { file, list })
}

/// Everything a plugin invocation needs besides the config.
#[derive(Clone, Debug)]
pub struct Invocation<'a> {
    /// CNI_CONTAINERID.
    pub container_id: &'a str,
    /// CNI_NETNS.
    pub netns: &'a Path,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_PATH.
    pub bin_dirs: &'a str,
    /// CNI_ARGS.
    pub args: String,
    /// Capability arguments (`portMappings`, …) offered to plugins that declare them.
    pub runtime_config: Value,
    /// Working directory for plugins.
    pub cwd: &'a Path,
}

fn plugin_conf(list: &Value, plugin: &Value, inv: &Invocation<'_>, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    if let Some(o) = conf.as_object_mut() {
        o.insert("name".into(), list["name"].clone());
        o.insert("cniVersion".into(), list["cniVersion"].clone());
        if let Some(prev) = prev {
            o.insert("prevResult".into(), prev.clone());
        }
        if let (Some(caps), Some(rc)) = (
            plugin["capabilities"].as_object(),
            inv.runtime_config.as_object(),
        ) {
            let offered: serde_json::Map<String, Value> = rc
                .iter()
                .filter(|(k, _)| caps.get(*k).and_then(Value::as_bool) == Some(true))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !offered.is_empty() {
                o.insert("runtimeConfig".into(), Value::Object(offered));
            }
        }
    }
    conf
}

fn find_plugin(kind: &str, bin_dirs: &str) -> Result<PathBuf, Error> {
    bin_dirs
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NoPlugin {
            plugin: kind.to_string(),
            path: bin_dirs.to_string(),
        })
}

fn exec(command: &str, conf: &Value, inv: &Invocation<'_>) -> Result<Option<Value>, Error> {
    let kind = conf["type"].as_str().unwrap_or_default().to_string();
    let bin = find_plugin(&kind, inv.bin_dirs)?;
    let stdin = serde_json::to_vec(conf).unwrap_or_default();
    let out = util::run(
        Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_PATH", inv.bin_dirs)
            .env("CNI_ARGS", &inv.args)
            .current_dir(inv.cwd),
        Some(&stdin),
    )
    .map_err(|source| Error::Spawn {
        plugin: kind.clone(),
        source,
    })?;
    if !out.ok() {
        let message = serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v["msg"].as_str().map(|m| match v["details"].as_str() {
                    Some(d) if !d.is_empty() => format!("{m}: {d}"),
                    _ => m.to_string(),
                })
            })
            .unwrap_or_else(|| format!("{} {}", out.stdout.trim(), out.stderr.trim()));
        return Err(Error::Plugin {
            command: command.to_string(),
            plugin: kind,
            message,
        });
    }
    Ok(serde_json::from_str(&out.stdout).ok())
}

/// CNI ADD through every plugin; returns the final result.
pub fn add(net: &Network, inv: &Invocation<'_>) -> Result<Value, Error> {
    let mut prev: Option<Value> = None;
    for plugin in net.list["plugins"].as_array().into_iter().flatten() {
        let conf = plugin_conf(&net.list, plugin, inv, prev.as_ref());
        if let Some(result) = exec("ADD", &conf, inv)? {
            prev = Some(result);
        }
    }
    Ok(prev.unwrap_or_else(|| json!({})))
}

/// CNI DEL through every plugin in reverse order, with the ADD result as prevResult.
/// Every plugin is called; the first error is returned.
pub fn del(net: &Network, inv: &Invocation<'_>, result: Option<&Value>) -> Result<(), Error> {
    let mut first = None;
    for plugin in net.list["plugins"].as_array().into_iter().flatten().rev() {
        let conf = plugin_conf(&net.list, plugin, inv, result);
        if let Err(e) = exec("DEL", &conf, inv) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The first IPv4 address (without prefix) in a CNI result, else the first address.
#[must_use]
pub fn pod_ip(result: &Value) -> Option<String> {
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a))
        .collect();
    ips.iter()
        .find(|a| !a.contains(':'))
        .or(ips.first())
        .map(|s| (*s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_becomes_a_list_and_runtime_config_goes_to_capable_plugins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"0.4.0","name":"m","plugins":[]}"#,
        )
        .unwrap();
        let net = load(dir.path()).unwrap();
        assert_eq!(net.list["plugins"][0]["type"], "bridge");
        assert_eq!(net.list["name"], "n");
        let inv = Invocation {
            container_id: "c",
            netns: Path::new("/x"),
            ifname: "eth0",
            bin_dirs: "/nonexistent",
            args: String::new(),
            runtime_config: json!({"portMappings": [{"hostPort": 80}]}),
            cwd: Path::new("/"),
        };
        let pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let c = plugin_conf(&net.list, &pm, &inv, Some(&json!({"ips": []})));
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 80);
        assert_eq!(c["prevResult"]["ips"], json!([]));
        assert_eq!(c["name"], "n");
        let br = plugin_conf(&net.list, &net.list["plugins"][0], &inv, None);
        assert!(br.get("runtimeConfig").is_none());
        assert!(matches!(add(&net, &inv), Err(Error::NoPlugin { .. })));
    }

    #[test]
    fn pod_ip_prefers_ipv4() {
        let r = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.1.2.3/24"}]});
        assert_eq!(pod_ip(&r).as_deref(), Some("10.1.2.3"));
    }
}
