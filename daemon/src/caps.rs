//! File capabilities: an RPM records them as text (`%caps(cap_net_raw=ep)`, libcap's
//! `cap_from_text` syntax); on disk and in an ostree commit they are the binary
//! `security.capability` extended attribute (`struct vfs_cap_data`, revision 2). Converting here
//! keeps `ping`-style binaries working after layering without linking libcap.

/// Capability names in kernel order (index = capability number).
const NAMES: &[&str] = &[
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner",
    "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct",
    "cap_sys_admin", "cap_sys_boot", "cap_sys_nice", "cap_sys_resource", "cap_sys_time",
    "cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write", "cap_audit_control",
    "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
    "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
];

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;

/// Parse libcap text (`cap_a,cap_b=ep cap_c+i`, `=ep` for all) into the
/// `security.capability` value. `None` for an empty set (nothing to store).
pub fn from_text(text: &str) -> Result<Option<Vec<u8>>, String> {
    let all: u64 = (1u64 << NAMES.len()) - 1;
    let (mut eff, mut perm, mut inh) = (0u64, 0u64, 0u64);
    for clause in text.split_whitespace() {
        let pos = clause
            .find(['=', '+', '-'])
            .ok_or_else(|| format!("capability clause {clause:?} has no '=', '+' or '-'"))?;
        let (names, rest) = clause.split_at(pos);
        let set = if names.is_empty() || names == "all" {
            all
        } else {
            let mut s = 0u64;
            for n in names.split(',') {
                let n = n.to_ascii_lowercase();
                let i = NAMES
                    .iter()
                    .position(|k| *k == n)
                    .or_else(|| n.parse::<usize>().ok().filter(|&i| i < NAMES.len()))
                    .ok_or_else(|| format!("unknown capability {n:?}"))?;
                s |= 1 << i;
            }
            s
        };
        // a clause may chain operators: `cap_x=p+e`
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            let mut flags = String::new();
            while let Some(&c) = chars.peek() {
                if matches!(c, '=' | '+' | '-') {
                    break;
                }
                flags.push(c);
                chars.next();
            }
            if op == '=' {
                eff &= !set;
                perm &= !set;
                inh &= !set;
            }
            for f in flags.chars() {
                let target = match f {
                    'e' => &mut eff,
                    'p' => &mut perm,
                    'i' => &mut inh,
                    other => return Err(format!("unknown capability flag {other:?} in {clause:?}")),
                };
                match op {
                    '-' => *target &= !set,
                    _ => *target |= set,
                }
            }
        }
    }
    if perm == 0 && inh == 0 {
        return Ok(None);
    }
    // The kernel has one effective bit for the whole file: set when any capability is effective.
    let magic = VFS_CAP_REVISION_2 | if eff != 0 { VFS_CAP_FLAGS_EFFECTIVE } else { 0 };
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&magic.to_le_bytes());
    for half in [0, 32] {
        out.extend_from_slice(&((perm >> half) as u32).to_le_bytes());
        out.extend_from_slice(&((inh >> half) as u32).to_le_bytes());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u8]) -> Vec<u32> {
        v.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn ping_style_caps() {
        let v = from_text("cap_net_raw=ep").unwrap().unwrap();
        assert_eq!(words(&v), vec![0x0200_0001, 1 << 13, 0, 0, 0]);
        let v = from_text("cap_net_admin,cap_net_raw+p").unwrap().unwrap();
        assert_eq!(words(&v), vec![0x0200_0000, (1 << 12) | (1 << 13), 0, 0, 0]);
        let v = from_text("cap_bpf=eip").unwrap().unwrap();
        assert_eq!(words(&v), vec![0x0200_0001, 0, 0, 1 << (39 - 32), 1 << (39 - 32)]);
    }

    #[test]
    fn empty_and_bad_text() {
        assert_eq!(from_text("").unwrap(), None);
        assert_eq!(from_text("cap_net_raw=").unwrap(), None);
        assert!(from_text("cap_bogus=ep").unwrap_err().contains("cap_bogus"));
        assert!(from_text("cap_net_raw").unwrap_err().contains("no '='"));
        assert!(from_text("cap_net_raw=x").unwrap_err().contains("flag"));
    }
}
