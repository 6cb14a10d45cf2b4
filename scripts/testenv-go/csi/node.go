package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func timeFromNs(ns int64) time.Time { return time.Unix(0, ns) }

// ---- Node ----

func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.nodeID, AccessibleTopology: d.topology()}, nil
}

func (d *driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	// No STAGE_UNSTAGE_VOLUME: the kubelet calls NodePublishVolume directly.
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

func (d *driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target path missing")
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability missing")
	}
	if err := checkCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, err
	}
	target := filepath.Clean(req.GetTargetPath())
	ro := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	for _, f := range req.GetVolumeCapability().GetMount().GetMountFlags() {
		if f == "ro" {
			ro = true
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.st.Volumes[req.GetVolumeId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetVolumeId())
	}
	src := d.volumePath(req.GetVolumeId())
	if m, err := mountAt(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if m != nil {
		// Already published here (a retry): fine if it is this volume with the same mode.
		if !m.isBindOf(src) {
			return nil, status.Errorf(codes.FailedPrecondition, "%s is already a mount point of something else (%s)", target, m.root)
		}
		if m.readOnly() != ro {
			return nil, status.Errorf(codes.AlreadyExists, "%s is published with readonly=%v", target, m.readOnly())
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind mount %s on %s: %v", src, target, err)
	}
	if ro {
		// A bind mount takes MS_RDONLY only in a remount.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target path missing")
	}
	target := filepath.Clean(req.GetTargetPath())
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; ; i++ {
		m, err := mountAt(target)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if m == nil {
			break
		}
		if i == 10 {
			return nil, status.Errorf(codes.Internal, "%s is still mounted after %d unmounts", target, i)
		}
		if err := unix.Unmount(target, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	// Remove the (now empty) target directory; never recursively.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove %s: %v", target, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// ---- mounts (/proc/self/mountinfo) ----

type mountEntry struct {
	dev        string // major:minor
	root       string // path of the mounted directory inside its filesystem
	mountPoint string
	options    string // per-mount options (ro/rw, ...)
}

func (m *mountEntry) readOnly() bool {
	for _, o := range strings.Split(m.options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// isBindOf: is this mount the directory p (on the same filesystem, at the same inner path)?
func (m *mountEntry) isBindOf(p string) bool {
	dev, rel, err := fsPath(p)
	return err == nil && m.dev == dev && m.root == rel
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 {
			continue
		}
		out = append(out, mountEntry{dev: fs[2], root: unescapeMount(fs[3]), mountPoint: unescapeMount(fs[4]), options: fs[5]})
	}
	return out, sc.Err()
}

// mountAt returns the topmost mount whose mount point is exactly p, or nil.
func mountAt(p string) (*mountEntry, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var found *mountEntry
	for i := range ms {
		if ms[i].mountPoint == p {
			found = &ms[i]
		}
	}
	return found, nil
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// fsPath returns the device (major:minor) of the filesystem holding p and p's path inside it,
// as mountinfo's "root" field would show for a bind mount of p.
func fsPath(p string) (dev, rel string, err error) {
	p, err = filepath.EvalSymlinks(p)
	if err != nil {
		return "", "", err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return "", "", err
	}
	dev = strconv.Itoa(int(unix.Major(st.Dev))) + ":" + strconv.Itoa(int(unix.Minor(st.Dev)))
	ms, err := mounts()
	if err != nil {
		return "", "", err
	}
	var best *mountEntry
	for i := range ms {
		if under(p, ms[i].mountPoint) || ms[i].mountPoint == "/" {
			if best == nil || len(ms[i].mountPoint) >= len(best.mountPoint) {
				best = &ms[i]
			}
		}
	}
	if best == nil {
		return dev, p, nil
	}
	rest := strings.TrimPrefix(p, best.mountPoint)
	if best.mountPoint == "/" {
		rest = p
	}
	rel = filepath.Join(best.root, rest)
	return dev, rel, nil
}

// mountsReferencing lists the mount points that are at or under p, and those that are bind
// mounts of p or of something under p (a published volume's target path).
func mountsReferencing(p string) ([]string, error) {
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	dev, rel, err := fsPath(p)
	if err != nil {
		return nil, err
	}
	real, _ := filepath.EvalSymlinks(p)
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if under(m.mountPoint, real) || (m.dev == dev && under(m.root, rel)) {
			out = append(out, m.mountPoint)
		}
	}
	return out, nil
}
