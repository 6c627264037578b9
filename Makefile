# portal-functions: build, test and run locally. `make help` lists the targets.
#
# SAM's makefile build (Metadata: BuildMethod: makefile, CodeUri: .) runs
# `make build-<LogicalId>` with ARTIFACTS_DIR set; each target writes one `bootstrap` there.

GO_BUILD = GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -tags lambda.norpc -ldflags="-s -w"
STATICCHECK = go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

FN ?=
EVENT ?=
ARGS ?=
FUZZTIME ?= 5m
comma := ,

.PHONY: help test vet lint dev invoke events load fuzz bench bench-pg reconcile build clean

help:
	@echo "make test                               the whole suite (vet, staticcheck, tests, coverage gate) against the local PostgreSQL"
	@echo "make dev                                every HTTP route on 127.0.0.1:3000, workers and local provider stand-ins"
	@echo "make invoke FN=<LogicalId> EVENT=events/<file>.json   one function under the Lambda Runtime Interface Emulator"
	@echo "make events                             re-sign the sample events (Stripe signatures, tokens)"
	@echo "make load [ARGS=-scenario=crm]          fixed-rate load against make dev (answers; or webhook commit -> CRM upsert delay)"
	@echo "make load ARGS='-scenario growth'       portal reads at 1k/100k/1M rows (-sizes; own databases); -scenario reads: read mix per -rates"
	@echo "make fuzz | make bench                  long fuzz runs | benchmarks"
	@echo "make bench-pg                           Postgres instructions per webhook delivery, counted by callgrind (valgrind)"
	@echo "make reconcile ARGS='-tenant <id>'      ops: find and enqueue missing follow-ups (dry run by default)"

build-PaymentWebhookFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/payment-webhook

build-CheckoutCreateFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/checkout-create

build-TicketCreateFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/ticket-create

build-PortalReadFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/portal-read

build-CrmPushFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/crm-push

build-BillingRefreshFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/billing-refresh

build-SupportPushFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/support-push

build-ReconcileFunction:
	$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./functions/reconcile

# build: every function for Lambda (arm64) into .build/<LogicalId>/bootstrap, as sam build would.
build:
	@for fn in $$(sed -n 's/^build-\([A-Za-z0-9]*\):.*/\1/p' Makefile); do \
		$(MAKE) --no-print-directory build-$$fn ARTIFACTS_DIR=$(CURDIR)/.build/$$fn || exit 1; \
	done

vet:
	go vet ./...

lint:
	$(STATICCHECK) ./...

# Coverage gate: the webhook handlers and the permission checks keep at least COVER_MIN % of
# their statements covered, measured in the suite's own run (every package's tests count).
COVER_PKGS = ./shared/billing ./shared/auth ./shared/tenant
COVER_MIN ?= 80

# test: everything, on the local PostgreSQL (DATABASE_URL overrides the server), then the gate.
test: vet lint
	go test -count=1 -timeout 9m -coverpkg=$(subst $(eval) ,$(comma),$(COVER_PKGS)) -coverprofile=coverage.out ./...
	go run ./cmd/covergate -profile coverage.out -min $(COVER_MIN) $(COVER_PKGS)

dev:
	go run ./cmd/dev

invoke:
	@test -n "$(FN)" || { echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	@test -n "$(EVENT)" || { echo "usage: make invoke FN=<LogicalId> EVENT=events/<file>.json"; exit 2; }
	go run ./cmd/invoke -fn "$(FN)" -event "$(EVENT)"

events:
	go run ./cmd/events

load:
	go run ./cmd/load $(ARGS)

fuzz:
	go test ./shared/auth -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME)
	go test ./shared/validation -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME)

bench:
	go test -run '^$$' -bench . -benchmem ./...

bench-pg:
	cmd/benchreport/pgcost.sh .

reconcile:
	go run ./cmd/reconcile $(ARGS)

clean:
	rm -rf .build .aws-sam
