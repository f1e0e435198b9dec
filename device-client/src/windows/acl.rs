//! The state directory's ACL on Windows: a protected DACL (nothing inherited from
//! ProgramData, whose default lets every user read) granting full control to SYSTEM and the
//! Administrators group only, inherited by every file and directory inside, set with
//! `SetNamedSecurityInfoW`.

#![allow(unsafe_code, reason = "Win32 security API calls; each call site says why it is sound")]

use anyhow::bail;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{null, null_mut};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_SUCCESS};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};

/// P: protected (no inheritance from the parent). OICI: files and subdirectories inherit the
/// entry. FA: full access. SY: LocalSystem. BA: BUILTIN\Administrators.
pub const SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

pub fn restrict_to_system_and_admins(dir: &Path) -> anyhow::Result<()> {
    let sddl = wide(SDDL.as_ref());
    let path = wide(dir.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: `sddl` is a NUL-terminated UTF-16 string that outlives the call; `sd` receives a
    // LocalAlloc'd descriptor freed below; the size output is optional (null).
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl.as_ptr(), SDDL_REVISION_1, &mut sd, null_mut())
    };
    if ok == 0 {
        bail!("cannot build the state directory's ACL: {}", std::io::Error::last_os_error());
    }
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = null_mut();
    // SAFETY: `sd` is the valid descriptor made above; the outputs are valid locals. `dacl`
    // points into `sd` and is used only before `sd` is freed.
    let ok = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    let result = if ok == 0 || present == 0 {
        Err(anyhow::anyhow!("the state directory's ACL has no DACL"))
    } else {
        // SAFETY: `path` is NUL-terminated UTF-16 and outlives the call; owner, group and SACL
        // are not changed (null); `dacl` is valid (see above).
        let rc = unsafe {
            SetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                dacl,
                null(),
            )
        };
        if rc == ERROR_SUCCESS {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "cannot restrict {} to SYSTEM and Administrators: {}",
                dir.display(),
                std::io::Error::from_raw_os_error(i32::try_from(rc).unwrap_or(i32::MAX))
            ))
        }
    };
    // SAFETY: `sd` was allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW with
    // LocalAlloc and is not used after this.
    unsafe { LocalFree(sd) };
    result
}
