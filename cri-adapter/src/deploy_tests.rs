//! The files under `deploy/` are what a node installs: they must stay in step with the
//! code (keys septem-cri knows, defaults it uses, handlers it accepts, a conflist its
//! CNI loader takes).

use crate::config::{self, FileConfig};
use crate::{cni, runtime};
use std::path::{Path, PathBuf};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

#[test]
fn cri_toml_parses_and_states_the_defaults() {
    let c = FileConfig::load(&deploy("septem-cri/cri.toml"), false).expect("deploy cri.toml");
    assert_eq!(c.listen.as_deref(), Some(Path::new(config::DEFAULT_LISTEN)));
    assert_eq!(
        c.state_dir.as_deref(),
        Some(Path::new(config::DEFAULT_STATE_DIR))
    );
    assert_eq!(
        c.cni_conf_dir.as_deref(),
        Some(Path::new(config::DEFAULT_CNI_CONF_DIR))
    );
    assert_eq!(c.cni_bin_dir.as_deref(), Some(config::DEFAULT_CNI_BIN_DIR));
    let backend = c.default_backend.expect("default-backend");
    assert_eq!(config::check_backend(&backend).expect("a backend"), "auto");
}

/// `handler: NAME` of every RuntimeClass document.
fn handlers(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("handler:"))
        .map(|h| h.split('#').next().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn runtime_classes_name_the_handlers_septem_cri_accepts() {
    let yaml = std::fs::read_to_string(deploy("kubernetes/runtimeclasses.yaml")).expect("yaml");
    let kinds = yaml.matches("kind: RuntimeClass").count();
    let names = handlers(&yaml);
    assert_eq!(
        names.len(),
        kinds,
        "one handler per RuntimeClass: {names:?}"
    );
    assert_eq!(names, ["septem", "septem-kvm", "septem-seccomp"]);
    for h in &names {
        runtime::backend_of(h, "auto").unwrap_or_else(|e| panic!("handler {h}: {e}"));
    }
    let pod = std::fs::read_to_string(deploy("kubernetes/httpd.yaml")).expect("yaml");
    let class = pod
        .lines()
        .find_map(|l| l.trim().strip_prefix("runtimeClassName:"))
        .expect("runtimeClassName")
        .trim();
    assert!(
        names.iter().any(|n| n == class),
        "{class} is not a RuntimeClass here"
    );
}

#[test]
fn conflist_loads_with_bridge_host_local_and_portmap() {
    let net = cni::load(&deploy("cni")).expect("deploy conflist");
    let plugins = net.list["plugins"].as_array().expect("plugins");
    let types: Vec<&str> = plugins.iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(types, ["bridge", "portmap"]);
    assert_eq!(plugins[0]["ipam"]["type"], "host-local");
    assert_eq!(
        plugins[0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0",
        "the guest takes its gateway from the default route"
    );
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
}
