// testcsi is lifeboat's test CSI driver (csi.lifeboat.test), for scripts/testenv only.
//
// It is hostPath-style: a volume is a directory under --data-dir/volumes, a snapshot is a copy of
// one (`cp -a`) under --data-dir/snapshots, and publishing a volume bind-mounts its directory onto
// the kubelet's target path. Every volume lives on the one node the driver runs on, and says so
// with its accessible topology. One process serves the CSI Identity, Controller and Node services
// on --endpoint and registers itself with the kubelet through the plugin-registration API on
// --registration-socket (there is no node-driver-registrar in the test environment).
// See docs/dev/test-csi.md.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	var cfg config
	kubeletRoot := flag.String("kubelet-root-dir", "/var/lib/kubelet", "the kubelet's --root-dir; the default socket paths are under it")
	flag.StringVar(&cfg.driverName, "driver-name", "csi.lifeboat.test", "CSI driver name")
	flag.StringVar(&cfg.nodeID, "node-id", "", "name of the Node this driver serves (required): its node id and topology segment")
	flag.StringVar(&cfg.dataDir, "data-dir", "", "directory holding volumes, snapshots and state.json (required)")
	flag.StringVar(&cfg.endpoint, "endpoint", "", "CSI socket path (default <kubelet-root-dir>/plugins/<driver-name>/csi.sock)")
	flag.StringVar(&cfg.registrationSocket, "registration-socket", "",
		"kubelet plugin-registration socket path (default <kubelet-root-dir>/plugins_registry/<driver-name>-reg.sock; \"-\" disables registration)")
	flag.Int64Var(&cfg.defaultSize, "default-volume-size", 1<<30, "capacity reported for a volume created without a capacity range")
	flag.BoolVar(&cfg.verbose, "v", false, "log every request and response")
	flag.Parse()
	if cfg.nodeID == "" || cfg.dataDir == "" {
		log.Fatal("--node-id and --data-dir are required")
	}
	if cfg.endpoint == "" {
		cfg.endpoint = filepath.Join(*kubeletRoot, "plugins", cfg.driverName, "csi.sock")
	}
	switch cfg.registrationSocket {
	case "":
		cfg.registrationSocket = filepath.Join(*kubeletRoot, "plugins_registry", cfg.driverName+"-reg.sock")
	case "-":
		cfg.registrationSocket = ""
	}
	cfg.endpoint = trimUnix(cfg.endpoint)
	cfg.registrationSocket = trimUnix(cfg.registrationSocket)

	d, err := newDriver(cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.serve(ctx); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func trimUnix(p string) string {
	if len(p) > 7 && p[:7] == "unix://" {
		return p[7:]
	}
	return p
}
