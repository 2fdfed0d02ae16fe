# xgate — build, test, benchmark, demo.
# Every target that needs Debian packages installs the missing ones first
# (tools/install-deps.sh: idempotent, quiet, root).

GO        ?= go
# The release version from git tags (tools/version.sh: v0.2.0 on the tag,
# v0.2.0-3-gabc1234 after it, v0.2.0-dev+gabc1234 before any tag).
VERSION   ?= $(shell tools/version.sh)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# A static binary: xgate needs nothing of libc (cgo off also lets it drop
# capabilities on every thread, see gateway/caps_linux.go).
BIN       ?= bin/xgate
# The daemon is built with -tags lean: it leaves out the test-host builder,
# the load generators and the plots (demo, load, bench). LAB is the full
# build beside it; the daemon's demo, load and bench run it.
LAB       ?= $(dir $(BIN))xgate-lab

# bpf2go reads these; the generate lines in bpf/ stay free of compiler details.
BPF2GO_CC     ?= clang-19
BPF2GO_STRIP  ?= llvm-strip-19
BPF2GO_CFLAGS ?= -O2 -g -Wall -Werror
export BPF2GO_CC BPF2GO_STRIP BPF2GO_CFLAGS

# Packages with goroutines, atomics or shared state run under the race detector.
RACE_PKGS  := $(shell $(GO) list ./... 2>/dev/null | grep -E '/(engine|gateway|xdp)($$|/)')
PLAIN_PKGS := $(filter-out $(RACE_PKGS),$(shell $(GO) list ./... 2>/dev/null))

TEST_DEBS     := gcc libc6-dev iproute2 prometheus bpftool nats-server systemd lintian
GENERATE_DEBS := clang-19 llvm-19 libbpf-dev

.PHONY: all build deb test bench soak generate generate-check demo lint clean deps-test deps-generate

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags lean -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/xgate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(LAB) ./cmd/xgate

# The Debian package: the static binary, the unit, /etc/xgate/xgate.yaml (a
# conffile), man pages and completions generated from the CLI
# (xgate docs), built by nfpm (a Go tool dependency: go tool nfpm).
DEB_VERSION ?= $(shell tools/version.sh --deb)
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
DEB_STAGE   ?= bin/deb-stage
DEB_OUT     ?= bin/xgate_$(DEB_VERSION)_$(DEB_ARCH).deb
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

deb: build
	rm -rf $(DEB_STAGE) && mkdir -p $(DEB_STAGE)/examples
	cp $(BIN) $(LAB) deploy/xgate.service deploy/xgate.yaml deploy/nfpm.yaml deploy/debian/* $(DEB_STAGE)/
	cp examples/xgate.yaml deploy/prometheus/xgate-rules.yml deploy/grafana/xgate.json $(DEB_STAGE)/examples/
	cp -r examples/lists $(DEB_STAGE)/examples/
	$(BIN) docs --man $(DEB_STAGE)/man --completions $(DEB_STAGE)/completions
	gzip -9n $(DEB_STAGE)/man/*.1
	printf 'xgate (%s) unstable; urgency=medium\n\n  * Release %s (CHANGELOG.md of the source).\n\n -- xgate maintainers <maintainers@xgate.invalid>  %s\n' \
		'$(DEB_VERSION)' '$(VERSION)' "$$(date -u -R -d @$(SOURCE_DATE_EPOCH))" | gzip -9n > $(DEB_STAGE)/changelog.gz
	nfpm=$$($(GO) tool -n nfpm) && cd $(DEB_STAGE) && DEB_VERSION=$(DEB_VERSION) DEB_ARCH=$(DEB_ARCH) \
		$$nfpm package --config nfpm.yaml --packager deb --target $(abspath $(DEB_OUT))

deps-test:
	@tools/install-deps.sh $(TEST_DEBS)

deps-generate:
	@tools/install-deps.sh $(GENERATE_DEBS)

# Unit, integration (root) and fuzz-seed tests, after proving the BPF C
# compiles (generate-check). Fuzz corpora under
# testdata/fuzz run as ordinary test cases.
test: deps-test generate-check
	$(GO) vet ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 $(PLAIN_PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./engine/ ./bpf/

# The soak (issue 16): a few minutes as root, not part of make test. The
# daemon on a test host under steady load through 100 reloads, a NATS outage
# and a full disk: RSS flat, every record accounted for (deploy/soak_test.go).
soak: deps-test
	XGATE_SOAK=1 $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 20m ./deploy/

# Rebuild the BPF objects from C (needs clang-19; installed if missing).
generate: deps-generate
	$(GO) generate ./bpf/...

# Prove the committed C still compiles, without touching the committed objects.
generate-check: deps-generate
	@tools/generate-check.sh

demo: build
	./bin/xgate demo

lint:
	$(GO) vet ./...
	@if $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -version >/dev/null 2>&1; then \
		$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... ; \
	else echo "staticcheck not available from the module proxy: skipped"; fi

clean:
	rm -rf bin/
