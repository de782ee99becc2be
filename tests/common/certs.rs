//! Test certificates made with `openssl` (the Debian package): a CA, a
//! server certificate for `localhost` and `127.0.0.1` signed by it, a
//! client certificate signed by it, and a key that matches neither; more
//! leaves signed by the CA ([`leaf`]) or by themselves ([`self_signed`]).

use std::path::{Path, PathBuf};

use super::prereq;

/// The files of [`make`], in one directory.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
    /// A key of no certificate here.
    pub other_key: PathBuf,
}

/// `openssl req` arguments for a new P-256 key, unencrypted.
const NEW_EC_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = prereq::command("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A leaf key and certificate `name` (`dir/name.key`, `dir/name.crt`)
/// signed by the CA of [`make`] in `dir`, with `ext` (an openssl extension
/// section's lines).
pub fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            &["req"][..],
            NEW_EC_KEY,
            &[
                "-keyout",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{name}.csr"),
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A self-signed key and certificate `name` (`dir/name.key`,
/// `dir/name.crt`) with the extension `ext` (e.g.
/// `subjectAltName=DNS:x`).
pub fn self_signed(dir: &Path, name: &str, cn: &str, ext: &str) {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            NEW_EC_KEY,
            &[
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-subj",
                &format!("/CN={cn}"),
                "-days",
                "2",
                "-addext",
                ext,
            ],
        ]
        .concat(),
    );
}

/// Makes every file in `dir`.
pub fn make(dir: &Path) -> Certs {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            NEW_EC_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=sockscope test CA",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    leaf(
        dir,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    leaf(dir, "client", "prometheus", "extendedKeyUsage=clientAuth\n");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "other.key",
        ],
    );
    Certs {
        dir: dir.to_owned(),
        ca: dir.join("ca.crt"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_crt: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        other_key: dir.join("other.key"),
    }
}
