# Entry points for people; each is one cargo command (see `cargo xtask help`).
# make deploy-prod ARGS=--yes    ==  cargo xtask deploy prod --yes  ==  deploy promote --env prod --yes

ARGS ?=

.PHONY: deploy-prod test demo ci

deploy-prod:
	cargo xtask deploy prod $(ARGS)

test:
	cargo xtask test

demo:
	cargo run -p deploy-cli --bin deploy -- demo

ci:
	cargo xtask ci
