"""PostgreSQL and MariaDB servers of the tests' own, for the TLS tests: started on this
machine's non-loopback address (a loopback host is never held to TLS: runtime.tls), with a
test CA made here (the cryptography package), one server with TLS and one without per
database. The TLS server's certificate can be swapped for one naming another host, and
reloaded without a restart (PostgreSQL: pg_ctl reload; MariaDB: FLUSH SSL).

For the IAM authentication tests (tests/test_iam_auth.py) a server also checks passwords:
PostgreSQL for the roles given to Server.require_password (every other login is trusted),
MariaDB when started with grants=True (its administrator then logs in over the Unix socket,
Server.admin_url).

Each start is skipped (with the reason) when the machine lacks what it needs: the server
binaries, a non-loopback IPv4 address, the postgres system user."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db")


def outside_address() -> str | None:
    """This machine's address on its first non-loopback interface (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.200", 9))  # TEST-NET-1: routing only
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ipaddress.ip_address(addr).is_loopback else addr


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Pki:
    folder: Path
    ca: Path  # the CA certificate the servers' certificates are signed by
    other_ca: Path  # a CA that signed nothing here
    cert: Path  # the server's certificate: its name is the address
    key: Path
    wrong_name_cert: Path  # the same key, a certificate for another name only
    address: str


def unavailable(reason: str) -> None:
    """Skip (printing why) the tests that need the TLS test servers, or fail them under
    SYNC_REQUIRE_DBS=1."""
    import pytest

    if os.environ.get("SYNC_REQUIRE_DBS") == "1":
        pytest.fail(f"{reason} (SYNC_REQUIRE_DBS=1 requires the TLS test servers)", pytrace=False)
    print(reason)
    pytest.skip(reason)


def pki_or_skip(folder: Path) -> Pki:
    """A test CA and this machine's server certificate in `folder` (readable by the database
    servers' users), or `unavailable` when the machine has no non-loopback address."""
    address = outside_address()
    if address is None:
        unavailable("no non-loopback IPv4 address to start the TLS test servers on")
    assert address is not None
    os.chmod(folder, 0o755)
    return make_pki(folder, address)


def make_pki(folder: Path, address: str) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca("ddb-sql-sync test CA")
    other_cert, _ = ca("another test CA")
    server_key = ec.generate_private_key(ec.SECP256R1())

    def server(san: list[x509.GeneralName]) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name("ddb-sql-sync test server"))
            .issuer_name(ca_cert.subject)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

    pem = serialization.Encoding.PEM
    paths = {n: folder / f"{n}.pem" for n in ("ca", "other_ca", "cert", "key", "wrong_name_cert")}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["other_ca"].write_bytes(other_cert.public_bytes(pem))
    paths["cert"].write_bytes(server([x509.IPAddress(ipaddress.ip_address(address))]).public_bytes(pem))
    paths["wrong_name_cert"].write_bytes(server([x509.DNSName("db.elsewhere.invalid")]).public_bytes(pem))
    paths["key"].write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(paths["key"], 0o600)
    return Pki(folder, address=address, **paths)


def _wait_port(host: str, port: int, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:g} s")


@dataclass
class Server:
    kind: str  # postgresql | mysql
    host: str
    port: int
    folder: Path
    tls: bool
    pki: Pki | None
    proc: subprocess.Popen[bytes] | None = None

    def url(self, **query: str) -> str:
        scheme = "postgresql+psycopg://postgres@" if self.kind == "postgresql" else "mysql+pymysql://root@"
        db = "postgres" if self.kind == "postgresql" else "mysql"
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{scheme}{self.host}:{self.port}/{db}" + (f"?{q}" if q else "")

    def admin_url(self, database: str | None = None) -> str:
        """The administrator's URL (PostgreSQL: postgres, trusted; MariaDB: root over the
        Unix socket, which a server with grant tables requires)."""
        if self.kind == "postgresql":
            return self.url().rsplit("/", 1)[0] + f"/{database or 'postgres'}"
        return f"mysql+pymysql://root@localhost/{database or 'mysql'}?unix_socket={self.folder / 'sock'}"

    def require_password(self, role: str) -> None:
        """PostgreSQL: `role` logs in with its password over TLS only (plain text refused,
        as RDS refuses an IAM token without TLS); other logins stay trusted."""
        assert self.kind == "postgresql"
        hba = self.folder / "data" / "pg_hba.conf"
        rules = f"hostssl all {role} 0.0.0.0/0 scram-sha-256\nhost all {role} 0.0.0.0/0 reject\n"
        hba.write_text(rules + hba.read_text())
        _pg(["pg_ctl", "-D", str(self.folder / "data"), "reload"])
        time.sleep(0.5)

    def use_cert(self, cert: Path) -> None:
        """Serve `cert` (with the same key) from now on."""
        assert self.pki is not None
        shutil.copy(cert, self.folder / "server.crt")
        if self.kind == "postgresql":
            _pg(["pg_ctl", "-D", str(self.folder / "data"), "reload"])
            time.sleep(0.5)
        else:
            subprocess.run(
                ["mariadb", "--no-defaults", f"--socket={self.folder / 'sock'}", "-uroot", "-e", "FLUSH SSL"],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        if self.kind == "postgresql":
            _pg(["pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop"], check=False)
        elif self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)


def _pg(args: list[str], *, check: bool = True) -> None:
    binary = str(PG_BIN[-1] / args[0])
    subprocess.run(["runuser", "-u", "postgres", "--", binary, *args[1:]], check=check, capture_output=True)


def start_postgresql(pki: Pki, *, tls: bool) -> Server:
    if not PG_BIN or not shutil.which("runuser"):
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) or runuser not found")
    folder = Path(tempfile.mkdtemp(prefix="sync-tls-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    _pg(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
    with (data / "pg_hba.conf").open("a") as f:
        f.write("host all all 0.0.0.0/0 trust\n")
    port = free_port(pki.address)
    opts = [f"-p {port}", f"-k {folder}", f"-c listen_addresses={pki.address}", "-c fsync=off"]
    if tls:
        for src, dst in ((pki.cert, "server.crt"), (pki.key, "server.key")):
            shutil.copy(src, folder / dst)
            shutil.chown(folder / dst, "postgres", "postgres")
        os.chmod(folder / "server.key", 0o600)
        opts += [
            "-c ssl=on",
            f"-c ssl_cert_file={folder / 'server.crt'}",
            f"-c ssl_key_file={folder / 'server.key'}",
        ]
    else:
        opts.append("-c ssl=off")
    _pg(["pg_ctl", "-D", str(data), "-o", " ".join(opts), "-l", str(folder / "log"), "-w", "start"])
    return Server("postgresql", pki.address, port, folder, tls, pki)


def start_mariadb(pki: Pki, *, tls: bool, grants: bool = False) -> Server:
    """grants: the server checks users and passwords (without: anyone logs in as anyone)."""
    if not INSTALL_DB or not Path(MARIADBD).exists():
        raise FileNotFoundError("MariaDB server binaries (mariadbd, mariadb-install-db) not found")
    folder = Path(tempfile.mkdtemp(prefix="sync-tls-mariadb-"))
    data = folder / "data"
    subprocess.run(
        [INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
         "--auth-root-authentication-method=normal"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port(pki.address)
    args = [
        MARIADBD, "--no-defaults", f"--datadir={data}", "--user=root", f"--port={port}",
        f"--bind-address={pki.address}", f"--socket={folder / 'sock'}", f"--pid-file={folder / 'pid'}",
        "--innodb-buffer-pool-size=16M", "--skip-log-bin",
    ]  # fmt: skip
    if not grants:
        args.append("--skip-grant-tables")
    if tls:
        shutil.copy(pki.cert, folder / "server.crt")
        args += [f"--ssl-cert={folder / 'server.crt'}", f"--ssl-key={pki.key}", f"--ssl-ca={pki.ca}"]
    log = (folder / "log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = Server("mysql", pki.address, port, folder, tls, pki, proc)
    try:
        _wait_port(pki.address, port, "mariadbd")
    except RuntimeError:
        server.stop()
        raise
    return server
