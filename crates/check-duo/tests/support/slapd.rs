//! A real OpenLDAP `slapd` (Debian's) for the LDAP tests: a `slapd.d` built by `slapadd -n0`
//! from a cn=config LDIF (the mdb backend), the test tree loaded by `slapadd -n1`, listening on
//! `ldap://127.0.0.1:PORT` in the test's temporary directory, without root (as root in CI it
//! simply stays root: no `-u`/`-g` needed). StartTLS with a CA and a server certificate made by
//! rcgen for the test; simple binds need TLS (`olcSecurity: simple_bind=128`), so a test that
//! passes proves the client really did StartTLS. Optionally with the `memberof` overlay
//! ([`Slapd::start_with_memberof`]), which keeps each user's `memberOf` as the groups' `member`
//! values are written. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use super::process::{free_port, wait_for_port, ChildGuard};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";
pub const LDAPMODIFY: &str = "/usr/bin/ldapmodify";
/// The `memberof` overlay's module (in `olcModulePath`).
pub const MEMBEROF_MODULE: &str = "/usr/lib/ldap/memberof.la";

pub const SUFFIX: &str = "dc=example,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
pub const ADMIN_PW: &str = "admin-pw";
pub const SERVICE_DN: &str = "cn=service,ou=system,dc=example,dc=test";
pub const SERVICE_PW: &str = "service-pw";

/// True when slapd and ldap-utils are installed (else a loud skip, or a failure under
/// `CHECK_DUO_REQUIRE_E2E`).
pub fn available(test: &str) -> bool {
    super::tools_present(
        test,
        &[
            ("slapd", SLAPD),
            ("slapadd (slapd)", SLAPADD),
            ("ldapmodify (ldap-utils)", LDAPMODIFY),
        ],
    )
}

/// [`available`], and the `memberof` overlay too.
pub fn memberof_available(test: &str) -> bool {
    available(test) && super::tools_present(test, &[("the memberof overlay", MEMBEROF_MODULE)])
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A CA: its PEM, and the issuer that signs with it.
pub fn make_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = ca.self_signed(&key).unwrap();
    (pem("CERTIFICATE", cert.der()), Issuer::new(ca, key))
}

/// A server certificate and its key for 127.0.0.1 and localhost, signed by `issuer`.
fn server_cert(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "slapd test");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, issuer).unwrap();
    (
        pem("CERTIFICATE", cert.der()),
        pem("PRIVATE KEY", &key.serialize_der()),
    )
}

/// A running slapd.
pub struct Slapd {
    pub dir: PathBuf,
    pub port: u16,
    /// The CA that signed its certificate (for `ldap.ca_file`).
    pub ca_file: PathBuf,
    /// Another CA, which did not (a wrong `ldap.ca_file`).
    pub wrong_ca_file: PathBuf,
    /// The service account's password, in a file (for `ldap.bind_password_file`).
    pub service_password_file: PathBuf,
    child: Option<ChildGuard>,
}

/// The cn=config LDIF; with `memberof`, the overlay's module is loaded and the overlay (its
/// defaults: `groupOfNames`, `member`, `memberOf`) is on the database.
fn config_ldif(dir: &Path, memberof: bool) -> String {
    let d = dir.display();
    let (module, overlay) = if memberof {
        (
            "olcModuleLoad: memberof\n",
            "
dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
",
        )
    } else {
        ("", "")
    };
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCACertificateFile: {d}/ca.pem
olcTLSCertificateFile: {d}/server.pem
olcTLSCertificateKeyFile: {d}/server.key
olcSecurity: simple_bind=128

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
{module}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcDbDirectory: {d}/data
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PW}
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by dn.exact=\"{SERVICE_DN}\" read by self read by * none
{overlay}"
    )
}

/// The test tree without the groups' entries: people (alice, bob, carol, `o'brien*`, `a(b)`,
/// `back\slash`, and dora, disabled), `ou=groups`, the service account.
/// Each user's password is `pw-` and the name.
pub fn tree() -> String {
    let person = |rdn: &str, uid: &str, extra: &str| {
        format!(
            "dn: uid={rdn},ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid}
sn: {uid}
userPassword: pw-{uid}
{extra}
"
        )
    };
    let mut t = format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=system,{SUFFIX}
objectClass: organizationalUnit
ou: system

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: service
userPassword: {SERVICE_PW}

"
    );
    t += &person(
        "alice",
        "alice",
        "displayName: Alice Liddell\nmail: alice@example.org\n",
    );
    // A name no header can carry as it is: not sent.
    t += &person(
        "bob",
        "bob",
        "displayName: Bob \u{e9}\nmail: bob@example.org\n",
    );
    t += &person("carol", "carol", "");
    t += &person("o'brien*", "o'brien*", "");
    t += &person("a(b)", "a(b)", "");
    t += &person("back\\5Cslash", "back\\slash", "");
    t += &person("dora", "dora", "employeeType: disabled\n");
    t
}

/// The groups' entries (`groupOfNames`, `member`): admins (alice), staff (alice, bob and
/// `o'brien*`). With `add`, as LDIF changes (`changetype: add`) for [`Slapd::modify`].
pub fn groups(add: bool) -> String {
    let change = if add { "changetype: add\n" } else { "" };
    let group = |cn: &str, members: &[&str]| {
        let mut s = format!(
            "dn: cn={cn},ou=groups,{SUFFIX}\n{change}objectClass: groupOfNames\ncn: {cn}\n"
        );
        for m in members {
            s.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
        }
        s + "\n"
    };
    group("admins", &["alice"]) + &group("staff", &["alice", "bob", "o'brien*"])
}

/// The user filter of the tests: enabled people only.
pub const USER_FILTER: &str =
    "(&(objectClass=inetOrgPerson)(uid={username})(!(employeeType=disabled)))";
/// The group filter of the tests.
pub const GROUP_FILTER: &str = "(&(objectClass=groupOfNames)(member={dn}))";

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Slapd {
    /// Build the directory in `dir` (created) with [`tree`] and [`groups`] and start it.
    pub fn start(dir: &Path) -> Slapd {
        Slapd::build(dir, false)
    }

    /// [`Slapd::start`] with the `memberof` overlay. The overlay keeps `memberOf` on writes of
    /// `member` only, never on `slapadd`'s loading: the groups are added over LDAP once the
    /// server is up (each add answered after the overlay has written the members' entries).
    pub fn start_with_memberof(dir: &Path) -> Slapd {
        Slapd::build(dir, true)
    }

    fn build(dir: &Path, memberof: bool) -> Slapd {
        std::fs::create_dir_all(dir.join("slapd.d")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let (ca_pem, issuer) = make_ca("slapd test CA");
        let (cert, key) = server_cert(&issuer);
        let (wrong_pem, _) = make_ca("another CA");
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        std::fs::write(dir.join("wrong-ca.pem"), wrong_pem).unwrap();
        std::fs::write(dir.join("service.pw"), format!("{SERVICE_PW}\n")).unwrap();
        std::fs::write(dir.join("config.ldif"), config_ldif(dir, memberof)).unwrap();
        let loaded = if memberof {
            tree()
        } else {
            tree() + &groups(false)
        };
        std::fs::write(dir.join("tree.ldif"), loaded).unwrap();
        run(
            Command::new(SLAPADD)
                .args(["-n0", "-F"])
                .arg(dir.join("slapd.d"))
                .arg("-l")
                .arg(dir.join("config.ldif")),
            "slapadd -n0",
        );
        run(
            Command::new(SLAPADD)
                .args(["-n1", "-F"])
                .arg(dir.join("slapd.d"))
                .arg("-l")
                .arg(dir.join("tree.ldif")),
            "slapadd -n1",
        );
        let mut s = Slapd {
            dir: dir.to_path_buf(),
            port: 0,
            ca_file: dir.join("ca.pem"),
            wrong_ca_file: dir.join("wrong-ca.pem"),
            service_password_file: dir.join("service.pw"),
            child: None,
        };
        s.resume();
        if memberof {
            s.modify(&groups(true));
        }
        s
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The `ldap` section for this server: StartTLS with its CA, the service account, the
    /// tests' filters.
    pub fn section(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url(),
            "start_tls": true,
            "ca_file": self.ca_file,
            "bind_dn": SERVICE_DN,
            "bind_password_file": self.service_password_file,
            "base_dn": format!("ou=people,{SUFFIX}"),
            "user_filter": USER_FILTER,
            "group_base_dn": format!("ou=groups,{SUFFIX}"),
            "group_filter": GROUP_FILTER,
            // Changes with every change of the entry, the password's included.
            "changed_attribute": "entryCSN",
            "timeout": 3,
        })
    }

    /// Stop it (the directory is down); [`Slapd::resume`] starts it again on the same port.
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
    }

    /// Start it (again), on its port if it had one (else a free one; retried on a clash).
    pub fn resume(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let log = std::fs::File::create(self.dir.join("slapd.log")).unwrap();
            let child = Command::new(SLAPD)
                .arg("-F")
                .arg(self.dir.join("slapd.d"))
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                .args(["-d", "256"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut guard = ChildGuard::new("slapd", child);
            match wait_for_port(port, Duration::from_secs(10), &mut guard) {
                Ok(()) => {
                    self.port = port;
                    self.child = Some(guard);
                    return;
                }
                Err(e) => {
                    last = format!("slapd: {e}: {}", self.log());
                    if self.port != 0 && !last.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("{last}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// Apply an LDIF change as the directory's root (ldapmodify over StartTLS).
    pub fn modify(&self, ldif: &str) {
        let mut cmd = Command::new(LDAPMODIFY);
        cmd.args([
            "-x",
            "-ZZ",
            "-H",
            &self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PW,
        ])
        .env("LDAPTLS_CACERT", &self.ca_file);
        super::process::run_with_input(cmd, ldif.as_bytes());
    }
}
