#!/usr/bin/env python3
"""docker-archive images for lifeboat's test environment, without a registry or an engine.

Python 3 standard library only. Used by scripts/testenv-images; usable on its own:

  testenv-images.py layer ROOTFS OUT.tar [--owner /PATH=UID:GID]...
      Write ROOTFS as one layer tar (sorted, mtime = $SOURCE_DATE_EPOCH, numeric owners as on
      disk when run as root, else 0:0; --owner overrides; modes, hard links and symlinks
      kept). Prints its sha256.
  testenv-images.py archive OUT --tag REF [--tag REF]... --layer TAR[=CREATED_BY]...
      [--entrypoint JSON] [--cmd JSON] [--user U] [--env K=V]... [--workdir D] [--label K=V]...
      Write a docker-archive (the `docker save` format) that `ctr images import` and
      `docker load` read: manifest.json, <config sha256>.json, <layer sha256>/layer.tar.
  testenv-images.py verify ARCHIVE [--list]
      Check an archive: manifest, config (amd64/linux), diff_ids against the layers, entry
      names (relative, no ..), hard-link targets, no duplicate entries. Prints a summary.
  testenv-images.py extract ARCHIVE DEST
      Apply the layers in order into DEST (for chroot tests; needs root for owners).
"""
import argparse
import datetime
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, when SOURCE_DATE_EPOCH is not set
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def die(msg):
    print(f"testenv-images.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def epoch():
    return int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_owner(spec):
    try:
        path, ids = spec.split("=", 1)
        uid, gid = ids.split(":", 1)
        return path.strip("/"), (int(uid), int(gid))
    except ValueError:
        die(f"--owner wants /PATH=UID:GID, got {spec!r}")


def walk(root):
    """Every path under root (relative, posix), parents before children, names sorted bytewise."""
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        names = sorted(os.listdir(full), key=os.fsencode)
        subdirs = []
        for n in names:
            r = f"{rel}/{n}" if rel else n
            yield r
            if stat.S_ISDIR(os.lstat(os.path.join(root, r)).st_mode):
                subdirs.append(r)
        # depth-first, in sorted order: push in reverse
        stack.extend(reversed(subdirs))


def write_layer(root, out, owners):
    """Write root as a layer tar; returns its sha256 (the diff_id, the layer being uncompressed)."""
    t = epoch()
    seen = {}  # (dev, ino) -> first name, for hard links
    used = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in walk(root):
            full = os.path.join(root, rel)
            st = os.lstat(full)
            ti = tarfile.TarInfo(rel)
            ti.mode = stat.S_IMODE(st.st_mode)
            # Owners as on disk when root extracted the tree (dpkg-deb -x keeps root:staff of
            # /var/local, say), else root; --owner overrides either.
            ti.uid, ti.gid = owners.get(rel, (st.st_uid, st.st_gid) if os.geteuid() == 0 else (0, 0))
            used.add(rel)
            ti.uname = ti.gname = ""
            ti.mtime = t
            data = None
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = seen[key]
                else:
                    seen[key] = rel
                    ti.type = tarfile.REGTYPE
                    ti.size = st.st_size
                    data = full
            else:
                die(f"{full}: not a file, directory or symlink (devices, FIFOs and sockets are not supported)")
            if data is None:
                tar.addfile(ti)
            else:
                with open(data, "rb") as f:
                    tar.addfile(ti, f)
    missing = set(owners) - used
    if missing:
        die(f"--owner for paths not in {root}: {', '.join(sorted(missing))}")
    return sha256_file(out)


def add_bytes(tar, name, data, t):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = t
    ti.uname = ti.gname = ""
    tar.addfile(ti, io.BytesIO(data))


def add_dir(tar, name, t):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = t
    ti.uname = ti.gname = ""
    tar.addfile(ti)


def write_archive(out, tags, layers, conf):
    t = epoch()
    diff_ids, history = [], []
    for path, created_by in layers:
        diff_ids.append("sha256:" + sha256_file(path))
        history.append({"created": iso(t), "created_by": created_by,
                        "comment": "built by lifeboat scripts/testenv-images"})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": iso(t),
        "config": conf,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [d.split(":", 1)[1] + "/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        done = set()
        for (path, _), name in zip(layers, layer_names):
            if name in done:  # the same layer twice in one image: stored once
                continue
            done.add(name)
            add_dir(tar, name.split("/")[0], t)
            add_bytes(tar, name.split("/")[0] + "/VERSION", b"1.0", t)
            ti = tarfile.TarInfo(name)
            ti.size = os.path.getsize(path)
            ti.mode = 0o644
            ti.mtime = t
            ti.uname = ti.gname = ""
            with open(path, "rb") as f:
                tar.addfile(ti, f)
        add_bytes(tar, config_name, config_bytes, t)
        add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode(), t)
    os.replace(tmp, out)
    return config_name[:-5]


def check_name(name, where):
    if name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"{where}: unsafe entry name {name!r}")


def verify(path, list_entries=False):
    """Check the archive; returns a summary dict. Raises ValueError on any defect."""
    with tarfile.open(path) as outer:
        members = {m.name: m for m in outer.getmembers()}
        if "manifest.json" not in members:
            raise ValueError("no manifest.json")
        manifest = json.load(outer.extractfile("manifest.json"))
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise ValueError("manifest.json must hold exactly one image")
        m = manifest[0]
        for k in ("Config", "RepoTags", "Layers"):
            if k not in m:
                raise ValueError(f"manifest.json lacks {k}")
        cfg_bytes = outer.extractfile(m["Config"]).read()
        if hashlib.sha256(cfg_bytes).hexdigest() + ".json" != m["Config"].split("/")[-1]:
            raise ValueError("config file name is not its sha256")
        cfg = json.loads(cfg_bytes)
        if cfg.get("architecture") != "amd64" or cfg.get("os") != "linux":
            raise ValueError(f"platform is {cfg.get('os')}/{cfg.get('architecture')}, not linux/amd64")
        diff_ids = cfg["rootfs"]["diff_ids"]
        if cfg["rootfs"].get("type") != "layers" or len(diff_ids) != len(m["Layers"]):
            raise ValueError("rootfs.diff_ids does not match the manifest's layers")
        if len(cfg.get("history", [])) != len(diff_ids):
            raise ValueError("history does not have one entry per layer")
        layers = []
        for i, (lname, did) in enumerate(zip(m["Layers"], diff_ids)):
            f = outer.extractfile(lname)
            data = f.read()
            got = "sha256:" + hashlib.sha256(data).hexdigest()
            if got != did:
                raise ValueError(f"layer {i} ({lname}): sha256 {got} != diff_id {did}")
            names, kinds, size = set(), {}, 0
            with tarfile.open(fileobj=io.BytesIO(data)) as lt:
                for e in lt:
                    n = e.name.rstrip("/")
                    check_name(n, lname)
                    if n in names:
                        raise ValueError(f"{lname}: duplicate entry {n}")
                    if e.islnk():
                        if e.linkname not in names:
                            raise ValueError(f"{lname}: hard link {n} -> {e.linkname}: target not earlier in the layer")
                        check_name(e.linkname, lname)
                    names.add(n)
                    kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
                            tarfile.LNKTYPE: "hardlink"}.get(e.type, "file" if e.isreg() else "other")
                    if kind == "other":
                        raise ValueError(f"{lname}: unexpected entry type for {n}")
                    kinds[kind] = kinds.get(kind, 0) + 1
                    size += e.size
                    if list_entries:
                        print(f"  {i} {stat.filemode(e.mode | {'dir': stat.S_IFDIR, 'symlink': stat.S_IFLNK}.get(kind, stat.S_IFREG))}"
                              f" {e.uid}:{e.gid} {e.size:>9} {n}"
                              + (f" -> {e.linkname}" if e.linkname else ""))
            layers.append({"diff_id": did, "tar_bytes": len(data), "content_bytes": size, "entries": kinds})
        return {"tags": m["RepoTags"], "config": cfg["config"], "layers": layers,
                "archive_bytes": os.path.getsize(path)}


def extract(path, dest):
    verify(path)
    with tarfile.open(path) as outer:
        m = json.load(outer.extractfile("manifest.json"))[0]
        for lname in m["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(lname)) as lt:
                try:
                    lt.extractall(dest, numeric_owner=True, filter="fully_trusted")
                except TypeError:  # Python < 3.11.4: no filter argument (names were checked above)
                    lt.extractall(dest, numeric_owner=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("layer")
    lp.add_argument("root")
    lp.add_argument("out")
    lp.add_argument("--owner", action="append", default=[])
    ap = sub.add_parser("archive")
    ap.add_argument("out")
    ap.add_argument("--tag", action="append", required=True)
    ap.add_argument("--layer", action="append", required=True, help="TAR[=CREATED_BY]")
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd", dest="cmd_json")
    ap.add_argument("--user")
    ap.add_argument("--env", action="append", default=None)
    ap.add_argument("--workdir")
    ap.add_argument("--label", action="append", default=[])
    vp = sub.add_parser("verify")
    vp.add_argument("archive")
    vp.add_argument("--list", action="store_true")
    vp.add_argument("--json", action="store_true")
    xp = sub.add_parser("extract")
    xp.add_argument("archive")
    xp.add_argument("dest")
    a = p.parse_args()

    if a.command == "layer":
        owners = dict(parse_owner(s) for s in a.owner)
        print(write_layer(a.root, a.out, owners))
    elif a.command == "archive":
        conf = {"Env": a.env if a.env is not None else [PATH_ENV]}
        for key, val in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd_json)):
            if val is not None:
                v = json.loads(val)
                if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                    die(f"--{key.lower()} wants a JSON list of strings")
                conf[key] = v
        if a.user:
            conf["User"] = a.user
        if a.workdir:
            conf["WorkingDir"] = a.workdir
        if a.label:
            conf["Labels"] = dict(s.split("=", 1) for s in a.label)
        layers = []
        for spec in a.layer:
            path, _, by = spec.partition("=")
            layers.append((path, by or f"layer {os.path.basename(path)}"))
        print(write_archive(a.out, a.tag, layers, conf))
    elif a.command == "verify":
        try:
            s = verify(a.archive, a.list)
        except (ValueError, KeyError, tarfile.TarError, json.JSONDecodeError) as e:
            die(f"{a.archive}: {e}")
        if a.json:
            print(json.dumps(s, indent=1))
        else:
            print(f"{a.archive}: ok, {s['archive_bytes']} bytes, tags {', '.join(s['tags'])}")
            for i, l in enumerate(s["layers"]):
                print(f"  layer {i}: {l['diff_id'][:19]}... {l['tar_bytes']} bytes, {l['entries']}")
    elif a.command == "extract":  # noqa
        try:
            extract(a.archive, a.dest)
        except (ValueError, KeyError, tarfile.TarError) as e:
            die(f"{a.archive}: {e}")


if __name__ == "__main__":
    main()
