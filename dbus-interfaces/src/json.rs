//! Rendering of status as `rpm-ostree status --json`-compatible JSON.
//!
//! Key names and shapes follow what the machine-config daemon, zincati and Ansible parse today:
//! every package array is always present (even empty), optional scalars are omitted when unknown,
//! and `transaction` is `null` or `[title, client, object-path]` like rpm-ostree's.

use serde_json::{json, Map, Value};
use zbus::zvariant::Value as ZValue;

use crate::{Deployment, TransactionInfo};

/// The whole status document.
pub fn status(deployments: &[Deployment], transaction: Option<&TransactionInfo>) -> Value {
    json!({
        "deployments": deployments.iter().map(deployment).collect::<Vec<_>>(),
        "transaction": transaction.map(|t| json!([t.title, t.client, t.path])),
        "cached-update": Value::Null,
        "update-driver": Value::Null,
    })
}

/// One deployment object.
pub fn deployment(d: &Deployment) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("id", json!(d.id));
    put("osname", json!(d.osname));
    put("serial", json!(d.serial));
    put("checksum", json!(d.checksum));
    if let Some(v) = &d.version {
        put("version", json!(v));
    }
    put("timestamp", json!(d.timestamp));
    put("booted", json!(d.booted));
    put("staged", json!(d.staged));
    put("pinned", json!(d.pinned));
    put("unlocked", json!(d.unlocked));
    put("finalization-locked", json!(d.finalization_locked));
    if let Some(v) = &d.origin {
        put("origin", json!(v));
    }
    if let Some(v) = &d.container_image_reference {
        put("container-image-reference", json!(v));
    }
    if let Some(v) = &d.container_image_reference_digest {
        put("container-image-reference-digest", json!(v));
    }
    if let Some(v) = &d.custom_origin {
        put("custom-origin", json!(v));
    }
    if let Some(v) = &d.base_checksum {
        put("base-checksum", json!(v));
    }
    if let Some(v) = &d.base_version {
        put("base-version", json!(v));
    }
    if let Some(v) = d.base_timestamp {
        put("base-timestamp", json!(v));
    }
    let meta: Map<String, Value> = d
        .base_commit_meta
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect();
    put("base-commit-meta", Value::Object(meta));
    put("packages", json!(d.packages));
    put("requested-packages", json!(d.requested_packages));
    put("requested-local-packages", json!(d.requested_local_packages));
    put(
        "requested-local-fileoverride-packages",
        json!(d.requested_local_fileoverride_packages),
    );
    put("base-removals", json!(d.base_removals));
    put("requested-base-removals", json!(d.requested_base_removals));
    put("base-local-replacements", json!(d.base_local_replacements));
    put(
        "requested-base-local-replacements",
        json!(d.requested_base_local_replacements),
    );
    put("regenerate-initramfs", json!(d.regenerate_initramfs));
    put("initramfs-args", json!(d.initramfs_args));
    put("kernel-arguments", json!(d.kernel_arguments));
    if let Some(c) = &d.live_replaced {
        put("live-replaced", json!(c));
        put("live-packages-added", json!(d.live_packages_added));
        put("live-packages-replaced", json!(d.live_packages_replaced));
    }
    Value::Object(m)
}

/// Convert a D-Bus value to JSON the way rpm-ostree renders GVariants: containers become
/// arrays/objects, byte arrays become arrays of numbers, variants are unwrapped.
pub fn value_to_json(v: &ZValue<'_>) -> Value {
    match v {
        ZValue::U8(n) => json!(n),
        ZValue::Bool(b) => json!(b),
        ZValue::I16(n) => json!(n),
        ZValue::U16(n) => json!(n),
        ZValue::I32(n) => json!(n),
        ZValue::U32(n) => json!(n),
        ZValue::I64(n) => json!(n),
        ZValue::U64(n) => json!(n),
        ZValue::F64(n) => json!(n),
        ZValue::Str(s) => json!(s.as_str()),
        ZValue::Signature(s) => json!(s.to_string()),
        ZValue::ObjectPath(p) => json!(p.as_str()),
        ZValue::Value(inner) => value_to_json(inner),
        ZValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        ZValue::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let key = match k {
                    ZValue::Str(s) => s.to_string(),
                    other => value_to_json(other).to_string(),
                };
                m.insert(key, value_to_json(v));
            }
            Value::Object(m)
        }
        ZValue::Structure(s) => Value::Array(s.fields().iter().map(value_to_json).collect()),
        // file descriptors, and GVariant maybe types when zvariant's gvariant feature is on
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// Every key tools parse today is present, and every package array is an array even when
    /// the deployment has none.
    #[test]
    fn deployment_has_every_key() {
        let d = Deployment {
            id: "fedora-abc.0".into(),
            osname: "fedora".into(),
            checksum: "abc".into(),
            unlocked: "none".into(),
            origin: Some("fedora:fedora/x86_64/coreos/stable".into()),
            ..Default::default()
        };
        let v = deployment(&d);
        for k in [
            "id",
            "osname",
            "serial",
            "checksum",
            "timestamp",
            "booted",
            "staged",
            "pinned",
            "unlocked",
            "finalization-locked",
            "origin",
            "base-commit-meta",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in [
            "packages",
            "requested-packages",
            "requested-local-packages",
            "requested-local-fileoverride-packages",
            "base-removals",
            "requested-base-removals",
            "base-local-replacements",
            "requested-base-local-replacements",
            "initramfs-args",
        ] {
            assert!(v[k].is_array(), "{k} must always be an array");
        }
        let top = status(&[d], None);
        assert!(top["transaction"].is_null());
        assert!(top["deployments"].is_array());
    }
}
