//! Compiles the eBPF programs under `src/source/ebpf/` (C with CO-RE) into
//! `$OUT_DIR/connects.bpf.o`, which `source::ebpf` embeds.
//!
//! `clang -target bpf -O2 -g` (Debian 12's clang 14 is enough), headers
//! from libbpf-dev (`bpf/bpf_helpers.h`, …) and the committed minimal
//! `vmlinux.h`; then `llvm-strip -g`, which drops DWARF but keeps `.BTF`
//! and `.BTF.ext` (the CO-RE relocations). `CLANG` and `LLVM_STRIP`
//! override the tools.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const HINT: &str = "install clang llvm libbpf-dev (Debian) to build sockscope's eBPF programs";

fn main() {
    let dir = PathBuf::from("src/source/ebpf");
    for f in ["connects.bpf.c", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LLVM_STRIP");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("connects.bpf.o");
    // bpf_tracing.h picks the register layout by architecture.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        Ok(other) => panic!("sockscope's eBPF programs: unsupported target arch {other}"),
        Err(e) => panic!("CARGO_CFG_TARGET_ARCH: {e}"),
    };

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("connects.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed ({s}) compiling src/source/ebpf/connects.bpf.c \
             (missing bpf/bpf_helpers.h? {HINT})"
        ),
        Err(e) => panic!("{clang}: {e}: {HINT}"),
    }

    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".into());
    match Command::new(&strip).arg("-g").arg(&obj).status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{strip} -g {} failed ({s})", obj.display()),
        Err(e) => panic!("{strip}: {e}: {HINT}"),
    }
}
