package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- Identity ----

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.cfg.driverName, VendorVersion: vendorVersion}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	svc := func(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
		return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: t}}}
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		svc(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		svc(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
	}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if _, err := os.Stat(filepath.Join(d.cfg.dataDir, "volumes")); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "data dir: %v", err)
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// ---- Controller ----

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}


// checkCapabilities accepts filesystem (mount) volumes in any access mode: every consumer is on
// the one node, so the multi-node modes are served too. Raw block is not supported.
func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	for _, c := range caps {
		if c.GetBlock() != nil {
			return status.Error(codes.InvalidArgument, "raw block volumes are not supported")
		}
		if c.GetMount() == nil {
			return status.Error(codes.InvalidArgument, "access type missing")
		}
		if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
			return status.Error(codes.InvalidArgument, "access mode missing")
		}
		if fs := c.GetMount().GetFsType(); fs != "" && fs != "ext4" && fs != "xfs" {
			// A directory has no filesystem type of its own; accept the common defaults that
			// StorageClasses and the provisioner's --default-fstype put here.
			return status.Errorf(codes.InvalidArgument, "fs type %q not supported", fs)
		}
	}
	return nil
}

func (d *driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{d.topologyKey: d.cfg.nodeID}}
}

// reachable: an accessibility requirement can be met when it has no requisite list or the list
// holds a topology this node satisfies.
func (d *driver) reachable(req *csi.TopologyRequirement) bool {
	if req == nil || len(req.GetRequisite()) == 0 {
		return true
	}
	for _, t := range req.GetRequisite() {
		ok := true
		for k, v := range t.GetSegments() {
			if k != d.topologyKey || v != d.cfg.nodeID {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (d *driver) volumeResponse(v *volume) *csi.CreateVolumeResponse {
	var src *csi.VolumeContentSource
	switch {
	case v.SourceSnapshot != "":
		src = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.SourceSnapshot}}}
	case v.SourceVolume != "":
		src = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.SourceVolume}}}
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.CapacityBytes,
		VolumeContext:      map[string]string{"node": d.cfg.nodeID},
		ContentSource:      src,
		AccessibleTopology: []*csi.Topology{d.topology()},
	}}
}

// copyTree copies the directory src to dst (which must not exist) with `cp -a`: modes, owners,
// timestamps, symlinks, hard links within the tree, xattrs where the filesystem has them.
// It copies into a temporary sibling first and renames, so dst appears complete or not at all.
func copyTree(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	out, err := exec.Command("cp", "-a", "--", src, tmp).CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("cp -a %s %s: %v: %s", src, tmp, err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, dst)
}

func (d *driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 || (limit > 0 && required > limit) {
		return nil, status.Errorf(codes.OutOfRange, "bad capacity range %d..%d", required, limit)
	}
	size := required
	if size == 0 {
		size = d.cfg.defaultSize
		if limit > 0 && size > limit {
			size = limit
		}
	}
	var srcSnap, srcVol string
	if s := req.GetVolumeContentSource(); s != nil {
		switch {
		case s.GetSnapshot() != nil:
			srcSnap = s.GetSnapshot().GetSnapshotId()
		case s.GetVolume() != nil:
			srcVol = s.GetVolume().GetVolumeId()
		default:
			return nil, status.Error(codes.InvalidArgument, "unknown volume content source")
		}
	}
	if !d.reachable(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "requisite topology %v does not include node %s",
			req.GetAccessibilityRequirements().GetRequisite(), d.cfg.nodeID)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.st.Volumes {
		if v.Name != req.GetName() {
			continue
		}
		if v.CapacityBytes < required || (limit > 0 && v.CapacityBytes > limit) ||
			v.SourceSnapshot != srcSnap || v.SourceVolume != srcVol {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists (%s) with other capacity or source", v.Name, v.ID)
		}
		return d.volumeResponse(v), nil
	}

	v := &volume{ID: newID("vol-"), Name: req.GetName(), CapacityBytes: size,
		SourceSnapshot: srcSnap, SourceVolume: srcVol, Parameters: req.GetParameters(), CreatedUnixNs: nowNs()}
	dst := d.volumePath(v.ID)
	switch {
	case srcSnap != "":
		s, ok := d.st.Snapshots[srcSnap]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "snapshot %s not found", srcSnap)
		}
		if s.SizeBytes > size {
			if limit > 0 && s.SizeBytes > limit {
				return nil, status.Errorf(codes.OutOfRange, "snapshot %s is %d bytes, more than the limit %d", srcSnap, s.SizeBytes, limit)
			}
			v.CapacityBytes = s.SizeBytes
		}
		if err := copyTree(d.snapshotPath(srcSnap), dst); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	case srcVol != "":
		s, ok := d.st.Volumes[srcVol]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "volume %s not found", srcVol)
		}
		if s.CapacityBytes > size {
			if limit > 0 && s.CapacityBytes > limit {
				return nil, status.Errorf(codes.OutOfRange, "volume %s is %d bytes, more than the limit %d", srcVol, s.CapacityBytes, limit)
			}
			v.CapacityBytes = s.CapacityBytes
		}
		if err := copyTree(d.volumePath(srcVol), dst); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	default:
		if err := os.Mkdir(dst, 0o777); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		// World-writable like a fresh hostPath volume, whatever the umask: pods of any uid can
		// write, and the kubelet's fsGroup handling (CSIDriver fsGroupPolicy File) can narrow it.
		if err := os.Chmod(dst, 0o777); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	d.st.Volumes[v.ID] = v
	if err := d.save(); err != nil {
		delete(d.st.Volumes, v.ID)
		os.RemoveAll(dst)
		return nil, status.Error(codes.Internal, err.Error())
	}
	return d.volumeResponse(v), nil
}

func (d *driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.volumePath(req.GetVolumeId())
	if _, ok := d.st.Volumes[req.GetVolumeId()]; !ok {
		if _, err := os.Lstat(p); err != nil || strings.ContainsAny(req.GetVolumeId(), "/.") {
			return &csi.DeleteVolumeResponse{}, nil // unknown: already deleted
		}
	}
	// Never delete through a mount: a volume still bind-mounted somewhere (published) or with
	// something mounted inside it is refused.
	if ms, err := mountsReferencing(p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if len(ms) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still mounted at %v", req.GetVolumeId(), ms)
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	delete(d.st.Volumes, req.GetVolumeId())
	if err := d.save(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities missing")
	}
	d.mu.Lock()
	_, ok := d.st.Volumes[req.GetVolumeId()]
	d.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetVolumeId())
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (d *driver) csiSnapshot(s *snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     s.ID,
		SourceVolumeId: s.SourceVolume,
		SizeBytes:      s.SizeBytes,
		CreationTime:   timestamppb.New(timeFromNs(s.CreatedUnixNs)),
		ReadyToUse:     true,
	}
}

func (d *driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.st.Snapshots {
		if s.Name == req.GetName() {
			if s.SourceVolume != req.GetSourceVolumeId() {
				return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists (%s) of volume %s", s.Name, s.ID, s.SourceVolume)
			}
			return &csi.CreateSnapshotResponse{Snapshot: d.csiSnapshot(s)}, nil
		}
	}
	v, ok := d.st.Volumes[req.GetSourceVolumeId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", req.GetSourceVolumeId())
	}
	s := &snapshot{ID: newID("snap-"), Name: req.GetName(), SourceVolume: v.ID, SizeBytes: v.CapacityBytes, CreatedUnixNs: nowNs()}
	if err := copyTree(d.volumePath(v.ID), d.snapshotPath(s.ID)); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.st.Snapshots[s.ID] = s
	if err := d.save(); err != nil {
		delete(d.st.Snapshots, s.ID)
		os.RemoveAll(d.snapshotPath(s.ID))
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateSnapshotResponse{Snapshot: d.csiSnapshot(s)}, nil
}

func (d *driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.st.Snapshots[req.GetSnapshotId()]; !ok {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	p := d.snapshotPath(req.GetSnapshotId())
	if ms, err := mountsReferencing(p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if len(ms) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s is mounted at %v", req.GetSnapshotId(), ms)
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	delete(d.st.Snapshots, req.GetSnapshotId())
	if err := d.save(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	d.mu.Lock()
	var all []*snapshot
	for _, s := range d.st.Snapshots {
		if req.GetSnapshotId() != "" && s.ID != req.GetSnapshotId() {
			continue
		}
		if req.GetSourceVolumeId() != "" && s.SourceVolume != req.GetSourceVolumeId() {
			continue
		}
		all = append(all, s)
	}
	d.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if all[i].CreatedUnixNs != all[j].CreatedUnixNs {
			return all[i].CreatedUnixNs < all[j].CreatedUnixNs
		}
		return all[i].ID < all[j].ID
	})
	start := 0
	if t := req.GetStartingToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(all) {
			return nil, status.Errorf(codes.Aborted, "bad starting token %q", t)
		}
		start = n
	}
	end := len(all)
	if m := int(req.GetMaxEntries()); m > 0 && start+m < end {
		end = start + m
	}
	resp := &csi.ListSnapshotsResponse{}
	for _, s := range all[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: d.csiSnapshot(s)})
	}
	if end < len(all) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}
