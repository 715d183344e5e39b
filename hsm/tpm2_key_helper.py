# Adds one secret key to a token of a tpm2-pkcs11 store, for tokens that refuse to create secret
# keys through PKCS#11 (C_CreateObject / C_GenerateKey). Run by hsm/tpm2_provisioner.cc as
#
#     /usr/bin/python3 -I -c <this file>
#
# with one JSON request on standard input and one JSON answer on standard output:
#
#   request  {"op": "import" | "generate", "store": "<TPM2_PKCS11_STORE>", "token": "<label>",
#             "key_label": "...", "id": "<hex CKA_ID>", "algorithm": "hmac:sha1" | "hmac:sha256" |
#             "hmac:sha512" | "aes256", "ram_dir": "<a tmpfs directory>", "memfd": true | false,
#             "pin": "<base64 user PIN>", "key": "<base64 key value>"}
#   answer   {"ok": true} or {"ok": false, "error": "<message without secrets>"}
#
# Why not simply run `tpm2_ptool import --userpin PIN --privkey FILE`:
#   - tpm2_ptool takes the PIN only on its command line, and itself runs tpm2-tools with values
#     derived from the PIN (the seal object's auth for tpm2_unseal, the new key's auth for
#     tpm2_import / tpm2_create) on theirs: every local user can read /proc/<pid>/cmdline.
#   - --privkey must name a regular file (a FIFO is refused, /dev/stdin cannot be seeked, and
#     /proc/self/fd/N names the wrong process once tpm2_import runs), so the seed would touch a
#     file system.
# This helper uses tpm2_ptool's own Python package (same database code, same object attributes)
# but replaces the methods of its Tpm2 class that put secrets on command lines: every
# authorization value goes to tpm2-tools as `file:/proc/self/fd/N`, N an inherited descriptor, and
# the key value is read by tpm2_import from a descriptor of this process (/proc/<pid>/fd/N). Those
# descriptors are memfds, or where memfd_create is forbidden (the agent's systemd unit filters it
# out) nameless O_TMPFILE files in "ram_dir", which must be a tmpfs: RAM only either way, never a
# name in a file system. Nothing secret is ever in an argv, the environment, a file on disk, or
# the answer. (A pipe will not do: tpm2-tools seek in what they read.)
#
# Known to match tpm2-pkcs11 1.9 (Debian 12); the helper checks what it relies on and refuses to
# run against a package that differs.
import base64
import binascii
import inspect
import json
import os
import subprocess
import sys
import tempfile


def answer(ok, error=None):
    out = {"ok": ok}
    if error is not None:
        out["error"] = error
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def fail(message):
    answer(False, message)
    sys.exit(1)


try:
    from tpm2_pkcs11 import commandlets_keys as keys
    from tpm2_pkcs11 import tpm2 as tpm2mod
    from tpm2_pkcs11 import utils
    from tpm2_pkcs11.db import Db
    from tpm2_pkcs11.pkcs11t import CKA_ID, CKA_LABEL
except Exception as e:  # noqa: BLE001 - any import problem means "not installed"
    fail("the tpm2-pkcs11 Python package (python3-tpm2-pkcs11-tools) cannot be loaded: %s" %
         type(e).__name__)

EXPECTED = {
    "createprimary": ["self", "hierarchyauth", "objauth", "alg", "attrs"],
    "load": ["self", "pctx", "pauth", "priv", "pub"],
    "unseal": ["self", "ctx", "auth"],
    "importkey": ["self", "phandle", "pauth", "objauth", "privkey", "objattrs", "seal", "alg",
                  "passin"],
    "create": ["self", "phandle", "pauth", "objauth", "objattrs", "seal", "alg"],
}
for name, params in EXPECTED.items():
    method = getattr(tpm2mod.Tpm2, name, None)
    if method is None or list(inspect.signature(method).parameters) != params:
        fail("this tpm2-pkcs11 Python package differs from the version the agent was written for "
             "(Tpm2.%s); add the key with tpm2_ptool by hand" % name)
for name in ("new_key_init", "new_key_create", "new_key_save"):
    if not hasattr(keys.ImportCommand, name) or not hasattr(keys.AddKeyCommand, name):
        fail("this tpm2-pkcs11 Python package lacks %s; add the key with tpm2_ptool by hand" % name)


RAM_FS = ("tmpfs", "ramfs")
settings = {"memfd": True, "ram_dir": "/dev/shm"}


def fs_type(path):
    """The file system type of the mount holding `path`, from /proc/self/mounts."""
    path = os.path.realpath(path)
    best, best_type = "", None
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ").replace("\\011", "\t")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, best_type = point, fields[2]
    return best_type


def memfd(name, data):
    """A descriptor holding `data` in RAM only, readable again from offset 0."""
    fd = None
    if settings["memfd"]:
        try:
            fd = os.memfd_create(name, 0)
        except OSError:
            fd = None
    if fd is None:
        ram_dir = settings["ram_dir"]
        if fs_type(ram_dir) not in RAM_FS:
            raise RuntimeError("memfd_create is not allowed and %s is not a tmpfs; secrets would "
                               "touch a disk" % ram_dir)
        fd = os.open(ram_dir, os.O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def to_bytes(value):
    return value.encode() if isinstance(value, str) else value


class Run:
    """Runs one tpm2-tools command; auth values go through memfds the child inherits."""

    def __init__(self, tool):
        self.cmd = [tool]
        self.fds = []

    def args(self, *args):
        self.cmd.extend(str(a) for a in args)
        return self

    def auth(self, option, value):
        if value is None or len(value) == 0:
            return self
        fd = memfd("auth", to_bytes(value))
        self.fds.append(fd)
        self.cmd.extend([option, "file:/proc/self/fd/%d" % fd])
        return self

    def __call__(self, what):
        try:
            p = subprocess.run(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, pass_fds=self.fds, env=os.environ)
        finally:
            for fd in self.fds:
                os.close(fd)
        if p.returncode != 0:
            # tpm2-tools never print auth values or key material on stderr; their first ERROR
            # line is the cause (the last one only says "Unable to run ...").
            lines = p.stderr.decode(errors="replace").strip().splitlines()
            errors = [l for l in lines if l.startswith("ERROR")] or lines or ["no output"]
            raise RuntimeError("%s failed: %s" % (what, errors[0]))
        return p.stdout


class SafeTpm2(tpm2mod.Tpm2):
    def load(self, pctx, pauth, priv, pub):
        files = []

        def as_file(blob):
            if blob is None or isinstance(blob, str):
                return blob
            f = tempfile.NamedTemporaryFile(dir=self.tmpdir)  # TPM-wrapped blob, not secret
            f.write(blob)
            f.flush()
            files.append(f)
            return f.name

        priv, pub = as_file(priv), as_file(pub)
        ctx = os.path.join(self.tmpdir, binascii.hexlify(os.urandom(8)).decode() + ".out")
        if priv is not None:
            run = Run("tpm2_load").args("-C", pctx, "-u", pub, "-r", priv, "-n", "/dev/null",
                                        "-c", ctx).auth("-P", pauth)
        else:
            run = Run("tpm2_loadexternal").args("-u", pub, "-c", ctx)
        run("loading an object into the TPM")
        return ctx

    def createprimary(self, hierarchyauth=None, objauth=None, alg=None, attrs=None):
        ctx = os.path.join(self.tmpdir, "context.out")
        run = Run("tpm2_createprimary").args("-c", ctx, "-g", "sha256", "-G", alg or "rsa")
        run.auth("-p", objauth).auth("-P", hierarchyauth)
        if attrs is not None:
            run.args("-a", attrs)
        run("creating the transient primary key")
        return ctx

    def unseal(self, ctx, auth):
        return Run("tpm2_unseal").args("-c", ctx).auth("-p", auth)(
            "unsealing the token's wrapping key (is the user PIN right?)")

    def importkey(self, phandle, pauth, objauth, privkey, objattrs=None, seal=None, alg=None,
                  passin=None):
        if seal is not None or passin is not None:
            raise RuntimeError("unsupported import options")
        priv = os.path.join(self.tmpdir, "import.priv")
        pub = os.path.join(self.tmpdir, "import.pub")
        run = Run("tpm2_import").args("-C", phandle, "-i", privkey, "-u", pub, "-r", priv)
        run.auth("-P", pauth).auth("-p", objauth)
        if objattrs is not None:
            run.args("-a", objattrs)
        if alg is not None:
            run.args("-G", alg)
        out = run("importing the key into the TPM")
        return priv, pub, out

    def create(self, phandle, pauth=None, objauth=None, objattrs=None, seal=None, alg=None):
        if seal is not None:
            raise RuntimeError("unsupported create options")
        priv = os.path.join(self.tmpdir, "create.priv")
        pub = os.path.join(self.tmpdir, "create.pub")
        run = Run("tpm2_create").args("-C", phandle, "-u", pub, "-r", priv)
        run.auth("-P", pauth).auth("-p", objauth)
        if objattrs is not None:
            run.args("-a", objattrs)
        if alg is not None:
            run.args("-G", alg)
        out = run("creating the key in the TPM")
        return priv, pub, out


def main():
    try:
        request = json.loads(sys.stdin.read())
        op = request["op"]
        store = request["store"]
        label = request["token"]
        key_label = request["key_label"]
        key_id = request["id"]
        algorithm = request["algorithm"]
        settings["memfd"] = bool(request.get("memfd", True))
        settings["ram_dir"] = request.get("ram_dir", "/dev/shm")
        pin = base64.b64decode(request["pin"], validate=True)
        key = base64.b64decode(request["key"], validate=True) if op == "import" else None
    except Exception:  # noqa: BLE001 - never echo the request
        fail("malformed request")
    if op not in ("import", "generate"):
        fail("unknown operation")
    allowed = {"import": ("hmac:sha1", "hmac:sha256", "hmac:sha512"),
               "generate": ("aes256", "hmac:sha256")}[op]
    if algorithm not in allowed:
        fail("unsupported algorithm for %s: %s" % (op, algorithm))
    if not os.path.isfile(os.path.join(store, "tpm2_pkcs11.sqlite3")):
        fail("there is no tpm2-pkcs11 store in %s (TPM2_PKCS11_STORE)" % store)

    command = keys.ImportCommand() if op == "import" else keys.AddKeyCommand()
    key_fd = None
    try:
        with Db(store) as db, utils.TemporaryDirectory() as tmp:
            tpm2 = SafeTpm2(tmp)
            c = db._conn.cursor()  # gettoken() exits the process when the label is unknown
            c.execute("SELECT * from tokens WHERE label=?", (label,))
            token = c.fetchone()
            if token is None:
                raise RuntimeError("the store %s has no token labelled '%s'" % (store, label))
            pobj = db.getprimary(token["pid"])
            sealobjects = db.getsealobject(token["id"])
            encobjauth, objauth = command.new_key_init(label, None, pin, "", pobj, sealobjects,
                                                       tpm2, tmp)
            privkey = None
            if key is not None:
                key_fd = memfd("key", key)
                privkey = "/proc/%d/fd/%d" % (os.getpid(), key_fd)
            priv, pub, pubdata = command.new_key_create(pobj, objauth, "", tpm2, algorithm,
                                                        privkey, None, tmp)
            # CKA_ID and CKA_LABEL exactly as asked (tpm2_ptool would hex-encode the id string).
            attrs = {CKA_ID: key_id.lower(), CKA_LABEL: binascii.hexlify(key_label.encode()).decode()}
            keys.NewKeyCommandBase.new_key_save(
                algorithm, key_label, key_id, label, priv, pub, pubdata, encobjauth, db, tpm2,
                extra_privattrs=attrs, override_keylen=getattr(command, "_override_keylen", None))
    except BaseException as e:  # noqa: BLE001 - SystemExit from the package included
        message = str(e) if isinstance(e, RuntimeError) else type(e).__name__
        fail(message)
    finally:
        if key_fd is not None:
            os.close(key_fd)
    answer(True)


main()
