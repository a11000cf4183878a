# layerd: the two commands that matter are `make demo` and `make test`; both install what they
# need first. One `cargo build` of the workspace feeds everything (shared target dir).
CARGO ?= cargo
DEMO_DIR ?= .demo

.PHONY: all deps build test demo bench rpm clean

all: build

deps:
	@./scripts/install-deps

build: deps
	$(CARGO) build --workspace --locked

# Unit tests of every crate, then the integration tests against booted virtual hosts (root).
test: build
	./scripts/test

# A guided tour on a virtual host: status, deploy an update, rollback, reboot, cleanup.
demo: build
	./target/debug/vhost demo --dir $(DEMO_DIR)

# Speed measurements against shared/reference/targets.md, on an optimised build.
bench:
	@./scripts/install-deps --bench
	$(CARGO) build --workspace --locked --release
	LAYERD_BIN_DIR=target/release ./target/release/vhost bench --dir $(DEMO_DIR)

# Binary RPM from the release build, with this machine's rpmbuild (Debian's works): target/rpmbuild/RPMS.
rpm: deps
	$(CARGO) build --workspace --locked --release
	rpmbuild -bb packaging/layerd.spec --define "_topdir $(CURDIR)/target/rpmbuild" \
	  --define "prebuilt $(CURDIR)" --define "prebuilt_bin $(CURDIR)/target/release" --define "_build_id_links none"
	@find target/rpmbuild/RPMS -name '*.rpm'

clean:
	# kept virtual hosts (LAYERD_KEEP_VHOST=1) hold immutable ostree deployment roots
	-chattr -R -i target/tmp $(DEMO_DIR) 2>/dev/null
	$(CARGO) clean
	rm -rf $(DEMO_DIR)
