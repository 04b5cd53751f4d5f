# linkgate: build and test. `make test` is what CI runs (.ci/run), with
# LINKGATE_REQUIRE_ROOT_TESTS=1 so that root-only tests and promtool
# checks fail instead of skipping.
GO      ?= go
BIN     ?= linkgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BRANCH  ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(shell git rev-parse HEAD 2>/dev/null) \
	-X github.com/prometheus/common/version.Branch=$(BRANCH) \
	-X github.com/prometheus/common/version.BuildDate=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: build test fmt vet lint unit churn fuzz alerts deploy bench

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/linkgate

test: fmt vet lint unit churn fuzz alerts deploy

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	@if [ ! -x "$(STATICCHECK)" ]; then \
		if [ -n "$$LINKGATE_REQUIRE_ROOT_TESTS" ]; then echo "staticcheck missing (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)"; exit 1; fi; \
		echo "staticcheck missing: skipping"; exit 0; fi; \
	$(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 -timeout 30m ./...

# The churn test again without the race detector, so that issue 7's
# convergence bound (1s; 3s under -race) is asserted at full speed.
churn:
	$(GO) test -count=1 -run '^TestChurnGateNeverLies$$' ./collector/

# Every fuzz target briefly (FUZZTIME each); a long run of one:
#   go test -run '^$$' -fuzz FuzzApply -fuzztime 10m ./collector/
# A failing input is written under the package's testdata/fuzz/.
# A count rather than a duration: go1.26's coordinator can end a timed run
# with a bare "context deadline exceeded" (golang/go#75804).
FUZZTIME ?= 5000x
FUZZ_TARGETS = ./collector/:FuzzApply ./collector/:FuzzDecodeStats ./cmd/linkgate/:FuzzParseConfig ./sidecar/:FuzzParseWait ./sidecar/:FuzzReadyHandler ./probe/:FuzzClassify ./probe/:FuzzParseEndpoint ./cmd/linkgate/:FuzzParseHyper2kvmConfig

fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10x $$pkg || exit 1; \
	done

alerts:
	@if ! command -v promtool >/dev/null; then \
		if [ -n "$$LINKGATE_REQUIRE_ROOT_TESTS" ]; then echo "promtool missing (apt-get install prometheus)"; exit 1; fi; \
		echo "promtool missing: skipping alert rule tests"; exit 0; fi; \
	promtool check rules alerts/linkgate.rules.yml && promtool test rules alerts/linkgate.rules.test.yml && \
	python3 dashboards/check_queries.py
	@if ! command -v amtool >/dev/null; then \
		if [ -n "$$LINKGATE_REQUIRE_ROOT_TESTS" ]; then echo "amtool missing (apt-get install prometheus-alertmanager)"; exit 1; fi; \
		echo "amtool missing: skipping the Alertmanager example"; exit 0; fi; \
	amtool check-config alerts/alertmanager.yml && alerts/inhibit_test.sh

# The deployment examples (deploy/README.md, "Checking these files"): their
# own Go module, so that the Kubernetes API types stay out of linkgate's.
# Missing tools (openssl, htpasswd, systemd-analyze) skip, or fail under
# LINKGATE_REQUIRE_ROOT_TESTS.
deploy:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./collector/
