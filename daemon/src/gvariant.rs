//! Converting libostree's GVariants (commit metadata) into D-Bus values.
//!
//! GVariant's serialization is a format zvariant reads natively, so the conversion goes through
//! the serialized bytes: exact for every type, with no per-type code to get wrong.

use std::collections::HashMap;

use zvariant::{serialized, Endian, OwnedValue};

use crate::glib;

/// zvariant 5 marks its GVariant support deprecated (moving to a separate crate in 6.0); it is
/// the same code zbus 5 links anyway, so we use it until we move to zbus 6.
#[allow(deprecated)]
/// Convert an `a{sv}` GVariant (such as commit metadata) to a map of D-Bus values. Entries
/// whose values D-Bus cannot carry (GVariant maybe types) are dropped.
pub fn dict_to_map(v: &glib::Variant) -> HashMap<String, OwnedValue> {
    let mut out = HashMap::new();
    if v.type_().as_str() != "a{sv}" {
        return out;
    }
    let endian = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };
    for i in 0..v.n_children() {
        let entry = v.child_value(i);
        let Some(key) = entry.child_value(0).str().map(str::to_string) else { continue };
        // the `v` itself: zvariant decodes a Value from a variant-typed serialization
        let value = entry.child_value(1);
        if value.as_variant().is_some_and(|inner| inner.type_().as_str().contains('m')) {
            continue;
        }
        let normal = value.normal_form();
        let bytes = normal.data_as_bytes();
        let data = serialized::Data::new(bytes.as_ref(), serialized::Context::new_gvariant(endian, 0));
        let parsed: Result<(zvariant::Value<'_>, usize), _> = data.deserialize_for_dynamic_signature("v");
        if let Ok((val, _)) = parsed {
            if let Ok(owned) = val.try_to_owned() {
                out.insert(key, owned);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use glib::prelude::*;

    #[test]
    fn converts_common_metadata_types() {
        let dict = glib::VariantDict::new(None);
        dict.insert("version", "39.20231101.3.0");
        dict.insert("ostree.bootable", true);
        dict.insert("rpmostree.inputhash", "abc");
        dict.insert("count", 42u64);
        dict.insert_value("list", &vec!["a".to_string(), "b".to_string()].to_variant());
        let m = dict_to_map(&dict.end());
        assert_eq!(String::try_from(m["version"].try_clone().unwrap()).unwrap(), "39.20231101.3.0");
        assert!(bool::try_from(m["ostree.bootable"].try_clone().unwrap()).unwrap());
        assert_eq!(u64::try_from(m["count"].try_clone().unwrap()).unwrap(), 42);
        let list: Vec<String> = m["list"].try_clone().unwrap().try_into().unwrap();
        assert_eq!(list, vec!["a", "b"]);
    }
}
