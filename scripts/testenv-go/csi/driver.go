package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const vendorVersion = "0.1.0"

type config struct {
	driverName         string
	nodeID             string
	dataDir            string
	endpoint           string // CSI socket path
	registrationSocket string // kubelet plugin-registration socket path; "" = do not register
	defaultSize        int64
	verbose            bool
}

// volume and snapshot are the persisted records (state.json); their data is the directory
// volumes/<ID> or snapshots/<ID> under the data dir.
type volume struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	CapacityBytes  int64             `json:"capacityBytes"`
	SourceSnapshot string            `json:"sourceSnapshot,omitempty"`
	SourceVolume   string            `json:"sourceVolume,omitempty"`
	Parameters     map[string]string `json:"parameters,omitempty"`
	CreatedUnixNs  int64             `json:"createdUnixNs"`
}

type snapshot struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	SourceVolume  string `json:"sourceVolume"`
	SizeBytes     int64  `json:"sizeBytes"`
	CreatedUnixNs int64  `json:"createdUnixNs"`
}

type state struct {
	Volumes   map[string]*volume   `json:"volumes"`   // by ID
	Snapshots map[string]*snapshot `json:"snapshots"` // by ID
	Groups    map[string]*group    `json:"groups"`    // by ID
}

// group is a volume group snapshot: member snapshots taken under one lock, at one time.
type group struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	Snapshots     []string `json:"snapshots"` // snapshot IDs, in source volume order
	CreatedUnixNs int64    `json:"createdUnixNs"`
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
	csi.UnimplementedGroupControllerServer

	cfg         config
	topologyKey string

	mu sync.Mutex // serialises every operation that reads or changes state or mounts
	st state

	registered chan struct{} // closed on the first successful registration notice
	regOnce    sync.Once
}

func newDriver(cfg config) (*driver, error) {
	if cfg.defaultSize <= 0 {
		cfg.defaultSize = 1 << 30
	}
	abs, err := filepath.Abs(cfg.dataDir)
	if err != nil {
		return nil, err
	}
	cfg.dataDir = abs
	d := &driver{cfg: cfg, topologyKey: "topology." + cfg.driverName + "/node", registered: make(chan struct{})}
	for _, sub := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(cfg.dataDir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *driver) statePath() string             { return filepath.Join(d.cfg.dataDir, "state.json") }
func (d *driver) volumePath(id string) string   { return filepath.Join(d.cfg.dataDir, "volumes", id) }
func (d *driver) snapshotPath(id string) string { return filepath.Join(d.cfg.dataDir, "snapshots", id) }

func (d *driver) load() error {
	d.st = state{Volumes: map[string]*volume{}, Snapshots: map[string]*snapshot{}, Groups: map[string]*group{}}
	b, err := os.ReadFile(d.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &d.st); err != nil {
		return fmt.Errorf("%s: %w", d.statePath(), err)
	}
	if d.st.Volumes == nil {
		d.st.Volumes = map[string]*volume{}
	}
	if d.st.Snapshots == nil {
		d.st.Snapshots = map[string]*snapshot{}
	}
	if d.st.Groups == nil {
		d.st.Groups = map[string]*group{}
	}
	return nil
}

// save writes state.json atomically (temp file, fsync, rename). Callers hold d.mu.
func (d *driver) save() error {
	b, err := json.MarshalIndent(&d.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, d.statePath())
}

func newID(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

func nowNs() int64 { return time.Now().UnixNano() }

// listen removes a stale socket file at path (never anything else) and listens on it.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return net.Listen("unix", path)
}

func (d *driver) logInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	if d.cfg.verbose {
		log.Printf("%s request: %+v", info.FullMethod, req)
	}
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s failed in %v: %v", info.FullMethod, time.Since(start).Round(time.Millisecond), err)
	} else if d.cfg.verbose {
		log.Printf("%s ok in %v: %+v", info.FullMethod, time.Since(start).Round(time.Millisecond), resp)
	} else if info.FullMethod != "/csi.v1.Identity/Probe" && info.FullMethod != "/csi.v1.Identity/GetPluginInfo" &&
		info.FullMethod != "/csi.v1.Identity/GetPluginCapabilities" && info.FullMethod != "/csi.v1.Controller/ControllerGetCapabilities" &&
		info.FullMethod != "/csi.v1.Node/NodeGetCapabilities" && info.FullMethod != "/csi.v1.Controller/ListSnapshots" {
		log.Printf("%s ok in %v", info.FullMethod, time.Since(start).Round(time.Millisecond))
	}
	if _, ok := status.FromError(err); !ok && err != nil {
		err = status.Error(status.Code(err), err.Error())
	}
	return resp, err
}

// serve runs the CSI server and the registration server until ctx is done, then removes the
// sockets (the registration socket first, so the kubelet deregisters the plugin).
func (d *driver) serve(ctx context.Context) error {
	csiLis, err := listen(d.cfg.endpoint)
	if err != nil {
		return fmt.Errorf("CSI endpoint: %w", err)
	}
	csiSrv := grpc.NewServer(grpc.UnaryInterceptor(d.logInterceptor))
	csi.RegisterIdentityServer(csiSrv, d)
	csi.RegisterControllerServer(csiSrv, d)
	csi.RegisterNodeServer(csiSrv, d)
	// Volume group snapshots (group.go).
	csi.RegisterGroupControllerServer(csiSrv, d)
	errc := make(chan error, 2)
	go func() { errc <- csiSrv.Serve(csiLis) }()
	log.Printf("%s %s: node %s, data %s, CSI endpoint %s", d.cfg.driverName, vendorVersion, d.cfg.nodeID, d.cfg.dataDir, d.cfg.endpoint)

	var regSrv *grpc.Server
	if d.cfg.registrationSocket != "" {
		regLis, err := listen(d.cfg.registrationSocket)
		if err != nil {
			csiSrv.Stop()
			os.Remove(d.cfg.endpoint)
			return fmt.Errorf("registration socket: %w", err)
		}
		regSrv = grpc.NewServer(grpc.UnaryInterceptor(d.logInterceptor))
		registerapi.RegisterRegistrationServer(regSrv, &registrar{d: d})
		go func() { errc <- regSrv.Serve(regLis) }()
		log.Printf("kubelet plugin registration on %s", d.cfg.registrationSocket)
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Printf("stopping")
	case serveErr = <-errc:
	}
	if regSrv != nil {
		regSrv.Stop()
		os.Remove(d.cfg.registrationSocket)
	}
	done := make(chan struct{})
	go func() { csiSrv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		csiSrv.Stop()
	}
	os.Remove(d.cfg.endpoint)
	return serveErr
}

// registrar serves the kubelet's plugin-registration API (k8s.io/kubelet pluginregistration/v1):
// the kubelet's plugin watcher finds the socket in <root-dir>/plugins_registry, asks GetInfo,
// connects to the CSI endpoint it names, and reports the outcome with NotifyRegistrationStatus.
type registrar struct {
	registerapi.UnimplementedRegistrationServer
	d *driver
}

func (r *registrar) GetInfo(ctx context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.d.cfg.driverName,
		Endpoint:          r.d.cfg.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(ctx context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("registered with the kubelet")
		r.d.regOnce.Do(func() { close(r.d.registered) })
	} else {
		log.Printf("kubelet registration FAILED: %s", s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
