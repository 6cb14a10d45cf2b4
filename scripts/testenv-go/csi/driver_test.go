package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const testNode = "real-node-0"

type running struct {
	cfg    config
	cancel context.CancelFunc
	done   chan error
	conn   *grpc.ClientConn
	id     csi.IdentityClient
	ctl    csi.ControllerClient
	node   csi.NodeClient
}

// startDriver runs a driver in-process on sockets under dir (a short path: unix sockets are
// limited to 108 bytes), the way scripts/testenv-csi lays them out under a kubelet root dir.
func startDriver(t *testing.T, dir string) *running {
	t.Helper()
	cfg := config{
		driverName:         "csi.lifeboat.test",
		nodeID:             testNode,
		dataDir:            filepath.Join(dir, "csi-data"),
		endpoint:           filepath.Join(dir, "kubelet/plugins/csi.lifeboat.test/csi.sock"),
		registrationSocket: filepath.Join(dir, "kubelet/plugins_registry/csi.lifeboat.test-reg.sock"),
	}
	d, err := newDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cfg: d.cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.serve(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(cfg.registrationSocket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("driver sockets did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.conn, err = grpc.NewClient("unix://"+cfg.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.id, r.ctl, r.node = csi.NewIdentityClient(r.conn), csi.NewControllerClient(r.conn), csi.NewNodeClient(r.conn)
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.conn.Close()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{r.cfg.endpoint, r.cfg.registrationSocket} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after stop", p)
		}
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func wantCode(t *testing.T, err error, c codes.Code, what string) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("%s: want %v, got %v", what, c, err)
	}
}

// cleanupMounts unmounts anything left mounted under dir (deepest first) before t.TempDir's
// RemoveAll runs, so a failing test never deletes through a mount.
func cleanupMounts(t *testing.T, dir string) {
	t.Cleanup(func() {
		ms, err := mounts()
		if err != nil {
			t.Error(err)
			return
		}
		var ps []string
		for _, m := range ms {
			if under(m.mountPoint, dir) {
				ps = append(ps, m.mountPoint)
			}
		}
		sort.Slice(ps, func(i, j int) bool { return len(ps[i]) > len(ps[j]) })
		for _, p := range ps {
			t.Errorf("left mounted: %s", p)
			unix.Unmount(p, unix.MNT_DETACH)
		}
	})
}

func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	r := startDriver(t, dir)
	defer r.stop(t)
	conn, err := grpc.NewClient("unix://"+r.cfg.registrationSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := registerapi.NewRegistrationClient(conn)
	ctx := context.Background()
	info, err := rc.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "csi.lifeboat.test" || info.Endpoint != r.cfg.endpoint ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Fatalf("GetInfo: %+v", info)
	}
	if _, err := rc.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("GetInfo: type=%s name=%s endpoint=%s versions=%v", info.Type, info.Name, info.Endpoint, info.SupportedVersions)

	// The node id and topology the kubelet records (CSINode, node label).
	ni, err := r.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ni.NodeId != testNode || ni.AccessibleTopology.GetSegments()["topology.csi.lifeboat.test/node"] != testNode {
		t.Fatalf("NodeGetInfo: %+v", ni)
	}
	pi, err := r.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || pi.Name != "csi.lifeboat.test" {
		t.Fatalf("GetPluginInfo: %v %v", pi, err)
	}
	pc, err := r.id.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(pc.Capabilities) != 2 {
		t.Fatalf("GetPluginCapabilities: %v %v", pc, err)
	}
	pr, err := r.id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !pr.GetReady().GetValue() {
		t.Fatalf("Probe: %v %v", pr, err)
	}
}

type fileInfo struct {
	mode     os.FileMode
	uid, gid uint32
	ino      uint64
	link     string
	data     string
}

func scan(t *testing.T, root string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		e := fileInfo{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, ino: st.Ino}
		if fi.Mode()&os.ModeSymlink != 0 {
			e.link, _ = os.Readlink(p)
		} else if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			e.data = string(b)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree: same names, modes, owners, data, symlink targets, and the same hard-link groups.
func sameTree(t *testing.T, a, b map[string]fileInfo) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("trees differ in size: %d vs %d", len(a), len(b))
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			t.Fatalf("%s missing from the copy", k)
		}
		if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.link != y.link || x.data != y.data {
			t.Fatalf("%s differs: %+v vs %+v", k, x, y)
		}
		for k2, x2 := range a {
			if (x2.ino == x.ino) != (b[k2].ino == y.ino) {
				t.Fatalf("hard links differ: %s and %s", k, k2)
			}
		}
	}
}

func TestVolumesSnapshotsPublish(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, bind mounts)")
	}
	dir := t.TempDir()
	cleanupMounts(t, dir)
	r := startDriver(t, dir)
	ctx := context.Background()
	top := &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"topology.csi.lifeboat.test/node": testNode}}}}

	// CreateVolume: empty, accessible on the node only, idempotent by name.
	cv, err := r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 20}, AccessibilityRequirements: top})
	if err != nil {
		t.Fatal(err)
	}
	va := cv.Volume
	if va.CapacityBytes != 5<<20 || len(va.AccessibleTopology) != 1 ||
		va.AccessibleTopology[0].Segments["topology.csi.lifeboat.test/node"] != testNode {
		t.Fatalf("CreateVolume: %+v", va)
	}
	again, err := r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 20}})
	if err != nil || again.Volume.VolumeId != va.VolumeId {
		t.Fatalf("CreateVolume again: %v %v", again, err)
	}
	_, err = r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 50 << 20}})
	wantCode(t, err, codes.AlreadyExists, "same name, larger size")
	_, err = r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{"topology.csi.lifeboat.test/node": "kwok-node-0"}}}}})
	wantCode(t, err, codes.ResourceExhausted, "other node's topology")
	_, err = r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-b", VolumeCapabilities: []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: rwo.AccessMode}}})
	wantCode(t, err, codes.InvalidArgument, "block")
	vc, err := r.ctl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: va.VolumeId, VolumeCapabilities: []*csi.VolumeCapability{rwo}})
	if err != nil || vc.Confirmed == nil {
		t.Fatalf("ValidateVolumeCapabilities: %v %v", vc, err)
	}

	// Content: a mode, an owner, a symlink, a hard link, a subdirectory.
	vdir := filepath.Join(r.cfg.dataDir, "volumes", va.VolumeId)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(vdir, "sub/deeper"), 0o750))
	must(os.WriteFile(filepath.Join(vdir, "sub/data.txt"), []byte("version 1"), 0o640))
	must(os.Chown(filepath.Join(vdir, "sub/data.txt"), 1234, 5678))
	must(os.Chown(filepath.Join(vdir, "sub"), 1000, 1000))
	must(os.Symlink("sub/data.txt", filepath.Join(vdir, "link")))
	must(os.Link(filepath.Join(vdir, "sub/data.txt"), filepath.Join(vdir, "hard")))
	must(os.WriteFile(filepath.Join(vdir, ".hidden"), []byte("h"), 0o600))
	before := scan(t, vdir)

	// Snapshot: a copy, idempotent by name, ready, sized.
	cs, err := r.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: va.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	sn := cs.Snapshot
	if !sn.ReadyToUse || sn.SizeBytes != 5<<20 || sn.SourceVolumeId != va.VolumeId || sn.CreationTime == nil {
		t.Fatalf("CreateSnapshot: %+v", sn)
	}
	cs2, err := r.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: va.VolumeId})
	if err != nil || cs2.Snapshot.SnapshotId != sn.SnapshotId {
		t.Fatalf("CreateSnapshot again: %v %v", cs2, err)
	}
	// The volume changes after the snapshot; the snapshot does not.
	must(os.WriteFile(filepath.Join(vdir, "sub/data.txt"), []byte("version 2"), 0o640))

	// Restore from the snapshot and clone the volume.
	rv, err := r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-restored", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		CapacityRange:       &csi.CapacityRange{RequiredBytes: 5 << 20},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: sn.SnapshotId}}}})
	if err != nil {
		t.Fatal(err)
	}
	if rv.Volume.ContentSource.GetSnapshot().GetSnapshotId() != sn.SnapshotId {
		t.Fatalf("restored volume's content source: %+v", rv.Volume.ContentSource)
	}
	restored := scan(t, filepath.Join(r.cfg.dataDir, "volumes", rv.Volume.VolumeId))
	sameTree(t, before, restored)
	if restored["sub/data.txt"].data != "version 1" {
		t.Fatal("restored volume does not hold the snapshot's data")
	}
	after := scan(t, vdir)
	cl, err := r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-clone", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: va.VolumeId}}}})
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, after, scan(t, filepath.Join(r.cfg.dataDir, "volumes", cl.Volume.VolumeId)))
	_, err = r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-nosnap", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap-missing"}}}})
	wantCode(t, err, codes.NotFound, "restore from a missing snapshot")

	// ListSnapshots: by source, by id, paged.
	if _, err := r.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-2", SourceVolumeId: cl.Volume.VolumeId}); err != nil {
		t.Fatal(err)
	}
	ls, err := r.ctl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: va.VolumeId})
	if err != nil || len(ls.Entries) != 1 || ls.Entries[0].Snapshot.SnapshotId != sn.SnapshotId {
		t.Fatalf("ListSnapshots by source: %v %v", ls, err)
	}
	ls, err = r.ctl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 1})
	if err != nil || len(ls.Entries) != 1 || ls.NextToken == "" {
		t.Fatalf("ListSnapshots page 1: %v %v", ls, err)
	}
	ls, err = r.ctl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 1, StartingToken: ls.NextToken})
	if err != nil || len(ls.Entries) != 1 || ls.NextToken != "" {
		t.Fatalf("ListSnapshots page 2: %v %v", ls, err)
	}

	// NodePublish: a bind mount, read-write and read-only; idempotent; unpublish removes the target.
	rw := filepath.Join(dir, "pods/uid-1/volumes/kubernetes.io~csi/pvc-a/mount")
	roT := filepath.Join(dir, "pods/uid-2/volumes/kubernetes.io~csi/pvc-a/mount")
	for i := 0; i < 2; i++ {
		if _, err := r.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: va.VolumeId, TargetPath: rw, VolumeCapability: rwo}); err != nil {
			t.Fatalf("NodePublishVolume #%d: %v", i, err)
		}
	}
	must(os.WriteFile(filepath.Join(rw, "from-pod"), []byte("hello"), 0o644))
	if b, err := os.ReadFile(filepath.Join(vdir, "from-pod")); err != nil || string(b) != "hello" {
		t.Fatalf("write through the mount not in the volume dir: %q %v", b, err)
	}
	if _, err := r.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: va.VolumeId, TargetPath: roT, VolumeCapability: rwo, Readonly: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(roT, "from-pod")); err != nil || string(b) != "hello" {
		t.Fatalf("read through the read-only mount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(roT, "nope"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to the read-only mount: want EROFS, got %v", err)
	}
	_, err = r.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: va.VolumeId, TargetPath: roT, VolumeCapability: rwo})
	wantCode(t, err, codes.AlreadyExists, "republish read-only target read-write")
	_, err = r.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-missing", TargetPath: filepath.Join(dir, "t3"), VolumeCapability: rwo})
	wantCode(t, err, codes.NotFound, "publish a missing volume")

	// A published volume is not deleted.
	_, err = r.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: va.VolumeId})
	wantCode(t, err, codes.FailedPrecondition, "delete a published volume")

	for _, tp := range []string{rw, roT} {
		for i := 0; i < 2; i++ {
			if _, err := r.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: va.VolumeId, TargetPath: tp}); err != nil {
				t.Fatalf("NodeUnpublishVolume %s #%d: %v", tp, i, err)
			}
		}
		if _, err := os.Stat(tp); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("target %s not removed: %v", tp, err)
		}
	}
	if ms, _ := mountsReferencing(vdir); len(ms) != 0 {
		t.Fatalf("still mounted after unpublish: %v", ms)
	}

	// Restart: names map to the same ids, snapshots are still listed.
	r.stop(t)
	r = startDriver(t, dir)
	again, err = r.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-a", VolumeCapabilities: []*csi.VolumeCapability{rwo},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 20}})
	if err != nil || again.Volume.VolumeId != va.VolumeId {
		t.Fatalf("CreateVolume after restart: %v %v", again, err)
	}
	ls, err = r.ctl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: sn.SnapshotId})
	if err != nil || len(ls.Entries) != 1 {
		t.Fatalf("ListSnapshots after restart: %v %v", ls, err)
	}

	// Delete: idempotent; the directories go.
	for i := 0; i < 2; i++ {
		if _, err := r.ctl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: sn.SnapshotId}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: va.VolumeId}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(vdir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("volume dir not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.dataDir, "snapshots", sn.SnapshotId)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot dir not removed: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(r.cfg.dataDir, "state.json"))
	must(err)
	var st state
	must(json.Unmarshal(b, &st))
	if _, ok := st.Volumes[va.VolumeId]; ok {
		t.Fatal("deleted volume still in state.json")
	}
	if _, ok := st.Snapshots[sn.SnapshotId]; ok {
		t.Fatal("deleted snapshot still in state.json")
	}
	r.stop(t)
}
