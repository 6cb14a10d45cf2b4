package main

// Volume group snapshots: every member volume is copied while the driver's lock is held, and all
// members get one creation time, so the group is one point in time for this driver.

import (
	"context"
	"os"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func (d *driver) GroupControllerGetCapabilities(context.Context, *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	return &csi.GroupControllerGetCapabilitiesResponse{Capabilities: []*csi.GroupControllerServiceCapability{{
		Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{
			Type: csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT}}}}}, nil
}

func (d *driver) csiGroup(g *group) *csi.VolumeGroupSnapshot {
	out := &csi.VolumeGroupSnapshot{GroupSnapshotId: g.ID, ReadyToUse: true,
		CreationTime: timestamppb.New(timeFromNs(g.CreatedUnixNs))}
	for _, id := range g.Snapshots {
		if s, ok := d.st.Snapshots[id]; ok {
			cs := d.csiSnapshot(s)
			cs.GroupSnapshotId = g.ID
			out.Snapshots = append(out.Snapshots, cs)
		}
	}
	return out
}

func (d *driver) CreateVolumeGroupSnapshot(ctx context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	if len(req.GetSourceVolumeIds()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "source volume ids missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, g := range d.st.Groups {
		if g.Name == req.GetName() {
			return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: d.csiGroup(g)}, nil
		}
	}
	g := &group{ID: newID("group-"), Name: req.GetName(), CreatedUnixNs: nowNs()}
	var made []*snapshot
	undo := func() {
		for _, s := range made {
			os.RemoveAll(d.snapshotPath(s.ID))
			delete(d.st.Snapshots, s.ID)
		}
	}
	for _, vid := range req.GetSourceVolumeIds() {
		v, ok := d.st.Volumes[vid]
		if !ok {
			undo()
			return nil, status.Errorf(codes.NotFound, "volume %s not found", vid)
		}
		s := &snapshot{ID: newID("snap-"), Name: req.GetName() + "-" + vid, SourceVolume: v.ID,
			SizeBytes: v.CapacityBytes, CreatedUnixNs: g.CreatedUnixNs}
		if err := copyTree(d.volumePath(v.ID), d.snapshotPath(s.ID)); err != nil {
			undo()
			return nil, status.Error(codes.Internal, err.Error())
		}
		d.st.Snapshots[s.ID] = s
		made = append(made, s)
		g.Snapshots = append(g.Snapshots, s.ID)
	}
	d.st.Groups[g.ID] = g
	if err := d.save(); err != nil {
		delete(d.st.Groups, g.ID)
		undo()
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: d.csiGroup(g)}, nil
}

func (d *driver) DeleteVolumeGroupSnapshot(ctx context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	if req.GetGroupSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "group snapshot id missing")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.st.Groups[req.GetGroupSnapshotId()]
	if !ok {
		return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
	}
	for _, id := range g.Snapshots {
		os.RemoveAll(d.snapshotPath(id))
		delete(d.st.Snapshots, id)
	}
	delete(d.st.Groups, g.ID)
	if err := d.save(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

func (d *driver) GetVolumeGroupSnapshot(ctx context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.st.Groups[req.GetGroupSnapshotId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "group snapshot %s not found", req.GetGroupSnapshotId())
	}
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: d.csiGroup(g)}, nil
}
