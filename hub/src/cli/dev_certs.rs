//! `hub dev-certs DIR`: a local CA, a server certificate and device
//! certificates, written as PEM files for trying TLS and device certificates
//! without a real PKI.
//!
//! The layout (`ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
//! `devices/<id>.pem`, `devices/<id>-key.pem`) is what the printed
//! `hub serve` line and device-sim's `--cert-dir` expect. Replacing a CA
//! silently would strand every certificate it signed, so an existing CA is
//! only replaced with `--force`, or kept and reused with `--reuse-ca` (to add
//! devices or re-issue the server certificate).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Args;

use crate::tls::certs::{BACKDATE, CertificateAuthority, IssuedCert, check_device_id};

/// Name of the CA's certificate inside DIR.
pub const CA_CERT: &str = "ca.pem";
/// Name of the CA's private key inside DIR.
pub const CA_KEY: &str = "ca-key.pem";
/// Name of the server certificate inside DIR.
pub const SERVER_CERT: &str = "server.pem";
/// Name of the server's private key inside DIR.
pub const SERVER_KEY: &str = "server-key.pem";
/// Folder of device certificates inside DIR.
pub const DEVICES_DIR: &str = "devices";

/// `hub dev-certs` arguments.
#[derive(Debug, Args)]
#[command(after_help = "\
Files written (keys are readable by their owner only):
  DIR/ca.pem, DIR/ca-key.pem            the CA (hub --client-ca, devices' trust)
  DIR/server.pem, DIR/server-key.pem    hub --tls-cert, --tls-key
  DIR/devices/ID.pem, ID-key.pem        one client certificate per --device

A device certificate names its device in the subject Common Name and in a
URI SAN urn:device:ID. The device must exist in the hub under that id
(`hub device add NAME` prints it); then issue its certificate with
`hub dev-certs DIR --reuse-ca --device ID`.

For development and tests only: the CA key sits next to the certificates.")]
pub struct DevCertsArgs {
    /// Folder to write into (created when missing).
    pub dir: PathBuf,

    /// Issue a client certificate for this device id (repeatable).
    #[arg(long = "device", value_name = "ID")]
    pub devices: Vec<String>,

    /// DNS name or IP address the server certificate is valid for
    /// (repeatable) [default: localhost, 127.0.0.1, ::1].
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// Replace an existing CA in DIR (certificates it signed stop being
    /// trusted by a hub given the new ca.pem).
    #[arg(long, conflicts_with = "reuse_ca")]
    pub force: bool,

    /// Sign with the CA already in DIR instead of creating one: adds device
    /// certificates; the server certificate is re-issued only with --host or
    /// when server.pem is missing.
    #[arg(long)]
    pub reuse_ca: bool,

    /// Days the server and device certificates are valid, 1 to 36500 (the
    /// CA: ten years).
    #[arg(long, value_name = "DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
}

/// Runs `hub dev-certs` and returns what to print.
pub(super) fn execute(args: &DevCertsArgs) -> anyhow::Result<String> {
    for id in &args.devices {
        check_device_id(id)?;
    }
    let (dns_names, ips) = hosts(&args.hosts);
    let dir = &args.dir;
    let ca_cert = dir.join(CA_CERT);
    let ca_key = dir.join(CA_KEY);
    let ca_exists = ca_cert.exists() || ca_key.exists();
    let mut out = String::new();

    let ca = if args.reuse_ca {
        let cert = read(&ca_cert)?;
        let key = read(&ca_key)?;
        CertificateAuthority::from_pem(&cert, &key)
            .with_context(|| format!("cannot reuse the CA in {}", dir.display()))?
    } else {
        if ca_exists && !args.force {
            bail!(
                "{} already holds a CA ({CA_CERT}, {CA_KEY}); pass --force to replace it \
                 (certificates it signed will no longer be trusted), or --reuse-ca to \
                 issue more certificates with it",
                dir.display()
            );
        }
        let ca = CertificateAuthority::new("hub dev-certs CA").context("cannot create the CA")?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_file(&ca_cert, ca.cert_pem(), false)?;
        write_file(&ca_key, ca.key_pem(), true)?;
        let _ = writeln!(out, "wrote {} (CA certificate)", ca_cert.display());
        let _ = writeln!(
            out,
            "wrote {} (CA private key: keep it secret)",
            ca_key.display()
        );
        ca
    };

    let now = SystemTime::now();
    let not_before = now - BACKDATE;
    let not_after = now + Duration::from_secs(u64::from(args.days) * 24 * 3600);
    let server_cert = dir.join(SERVER_CERT);
    let server_key = dir.join(SERVER_KEY);
    if !args.reuse_ca || !args.hosts.is_empty() || !server_cert.exists() {
        let names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
        let server = ca
            .server_cert_valid(&names, &ips, not_before, not_after)
            .context("cannot issue the server certificate")?;
        write_pair(&server, &server_cert, &server_key)?;
        let hosts: Vec<String> = dns_names
            .iter()
            .cloned()
            .chain(ips.iter().map(IpAddr::to_string))
            .collect();
        let _ = writeln!(
            out,
            "wrote {}, {} (server, for {})",
            server_cert.display(),
            server_key.display(),
            hosts.join(", ")
        );
    }

    if !args.devices.is_empty() {
        let devices = dir.join(DEVICES_DIR);
        fs::create_dir_all(&devices)
            .with_context(|| format!("cannot create {}", devices.display()))?;
        for id in &args.devices {
            let cert = ca
                .device_cert_valid(id, not_before, not_after)
                .with_context(|| format!("cannot issue the certificate of device {id}"))?;
            let cert_path = devices.join(format!("{id}.pem"));
            let key_path = devices.join(format!("{id}-key.pem"));
            write_pair(&cert, &cert_path, &key_path)?;
            let _ = writeln!(
                out,
                "wrote {}, {} (device {id})",
                cert_path.display(),
                key_path.display()
            );
        }
    }

    let _ = write!(
        out,
        "\nServe wss:// and https:// with device certificates accepted:\n  \
         hub serve --tls-cert {} --tls-key {} --client-ca {}\n\
         Devices trust {} (device-sim: --ca {} --cert-dir {}).\n",
        server_cert.display(),
        server_key.display(),
        ca_cert.display(),
        ca_cert.display(),
        ca_cert.display(),
        dir.display(),
    );
    Ok(out)
}

/// The server names from `--host`: IP addresses apart from DNS names.
fn hosts(given: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    if given.is_empty() {
        return (
            vec!["localhost".to_owned()],
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        );
    }
    let mut names = Vec::new();
    let mut ips = Vec::new();
    for host in given {
        // `[::1]` as people write it in URLs.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(host.clone()),
        }
    }
    (names, ips)
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_pair(issued: &IssuedCert, cert: &Path, key: &Path) -> anyhow::Result<()> {
    write_file(key, &issued.key_pem, true)?;
    write_file(cert, &issued.cert_pem, false)
}

/// Writes `contents` to `path`; a secret is readable by its owner only
/// (0600 on unix), also when the file existed with a wider mode.
fn write_file(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_names_and_addresses() {
        let (names, ips) = hosts(&[]);
        assert_eq!(names, ["localhost"]);
        assert_eq!(ips.len(), 2);
        let (names, ips) = hosts(&[
            "hub.example".to_owned(),
            "10.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ]);
        assert_eq!(names, ["hub.example"]);
        assert_eq!(
            ips,
            [
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }
}
