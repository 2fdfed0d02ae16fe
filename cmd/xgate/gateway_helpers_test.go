package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/xgate/xgate/gateway/config"

	"github.com/xgate/xgate/gateway"
	"github.com/xgate/xgate/testenv"
)

// startTestGateway runs a gateway with cfg (nothing pinned) inside host's
// namespace until the test ends, and waits until its HTTP server listens.
func startTestGateway(t *testing.T, host *testenv.Host, cfg *config.Config) *gateway.Gateway {
	t.Helper()
	cfg.Pin.Path = "" // nothing pinned
	var g *gateway.Gateway
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := host.Do(func() error {
		var err error
		g, err = gateway.New(cfg, gateway.Options{Logger: log, RecvTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for g.HTTPAddr() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (test hosts, XDP)")
	}
}
