/* bcryptprimitives.dll for Wine 8, whose own lacks ProcessPrng (Rust's std imports it on
 * Windows). Placed beside berqenas-device.exe only for the Wine runs in deploy/test.sh; real
 * Windows (10 and later) ships the function. Built by deploy/wine/build-shim.sh. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
