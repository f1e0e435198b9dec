//! What the fingerprint reads on Windows: the MAC of every non-loopback adapter
//! (`GetAdaptersAddresses`), `MachineGuid` (HKLM\SOFTWARE\Microsoft\Cryptography) and the OS
//! version (HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion). Anything unreadable is left
//! empty rather than failing: a fingerprint with fewer facts is still a fingerprint.

#![allow(unsafe_code, reason = "Win32 IP helper and registry calls; each call site says why it is sound")]

use std::ptr::{null, null_mut};
use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, ERROR_SUCCESS};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetAdaptersAddresses, GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST,
    IF_TYPE_SOFTWARE_LOOPBACK, IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;
use windows_sys::Win32::System::Registry::{RegGetValueW, HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ};

pub struct Facts {
    pub macs: Vec<String>,
    pub machine_guid: String,
    pub os_version: String,
}

pub fn facts() -> Facts {
    let product = registry_string(r"SOFTWARE\Microsoft\Windows NT\CurrentVersion", "ProductName");
    let display = registry_string(r"SOFTWARE\Microsoft\Windows NT\CurrentVersion", "DisplayVersion");
    let build = registry_string(r"SOFTWARE\Microsoft\Windows NT\CurrentVersion", "CurrentBuild");
    let mut os_version = product;
    for part in [display, if build.is_empty() { build } else { format!("build {build}") }] {
        if !part.is_empty() {
            if !os_version.is_empty() {
                os_version.push(' ');
            }
            os_version.push_str(&part);
        }
    }
    Facts {
        macs: adapter_macs(),
        machine_guid: registry_string(r"SOFTWARE\Microsoft\Cryptography", "MachineGuid"),
        os_version,
    }
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A REG_SZ value under HKLM, or empty.
fn registry_string(key: &str, value: &str) -> String {
    let (key, value) = (wide(key), wide(value));
    let mut buf = vec![0u16; 256];
    for _ in 0..2 {
        let mut bytes = u32::try_from(buf.len() * 2).unwrap_or(u32::MAX);
        // SAFETY: `key` and `value` are NUL-terminated UTF-16; `buf` has `bytes` writable bytes;
        // the type output is optional (null).
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ,
                null_mut(),
                buf.as_mut_ptr().cast(),
                &mut bytes,
            )
        };
        if rc == ERROR_SUCCESS {
            let len = (bytes as usize / 2).min(buf.len());
            let text = String::from_utf16_lossy(&buf[..len]);
            return text.trim_end_matches('\0').trim().to_string();
        }
        if rc != windows_sys::Win32::Foundation::ERROR_MORE_DATA {
            return String::new();
        }
        buf = vec![0u16; bytes as usize / 2 + 1];
    }
    String::new()
}

/// `aa:bb:…` of every adapter with a 6-byte hardware address that is not the loopback.
fn adapter_macs() -> Vec<String> {
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    let mut size: u32 = 16 * 1024;
    for _ in 0..4 {
        // u64 elements: the list is 8-byte aligned, as IP_ADAPTER_ADDRESSES_LH needs.
        let mut buf = vec![0u64; (size as usize).div_ceil(8)];
        let head: *mut IP_ADAPTER_ADDRESSES_LH = buf.as_mut_ptr().cast();
        // SAFETY: `head` points to `size` writable, suitably aligned bytes; reserved is null.
        let rc = unsafe { GetAdaptersAddresses(u32::from(AF_UNSPEC), flags, null(), head, &mut size) };
        if rc == ERROR_BUFFER_OVERFLOW {
            continue;
        }
        if rc != ERROR_SUCCESS {
            return Vec::new();
        }
        let mut macs = Vec::new();
        let mut p = head.cast_const();
        while !p.is_null() {
            // SAFETY: `p` is the head or a `Next` link of the list GetAdaptersAddresses wrote
            // into `buf`, which is alive until the end of this function.
            let a = unsafe { &*p };
            if a.IfType != IF_TYPE_SOFTWARE_LOOPBACK && a.PhysicalAddressLength == 6 {
                let m = &a.PhysicalAddress[..6];
                macs.push(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
            }
            p = a.Next.cast_const();
        }
        return macs;
    }
    Vec::new()
}
