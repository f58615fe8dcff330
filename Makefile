# journey: PGXS build of the extension, its regression tests and its TAP tests.

EXTENSION = journey
MODULE_big = journey
EXTVERSION = 0.3

OBJS = \
	src/journey.o \
	src/util.o \
	src/tenant.o \
	src/template.o \
	src/definition.o \
	src/definition_condition.o \
	src/sequence.o \
	src/update_sequence.o \
	src/templates_api.o \
	src/enroll.o \
	src/ingest.o \
	src/trigger.o \
	src/timewindow.o \
	src/branch.o \
	src/executor.o \
	src/executor_sql.o \
	src/stats.o \
	src/simulate.o \
	src/cron.o \
	src/outbound.o \
	src/providers.o \
	src/transport.o \
	src/shmem.o \
	src/worker.o \
	src/lanes.o \
	src/backup.o \
	src/health.o \
	src/erasure.o \
	src/retention.o \
	src/suppress.o \
	src/unsubscribe.o \
	src/inbound.o \
	src/delivery.o \
	src/send_rules.o \
	src/worker_executor.o \
	src/executor_helper.o \
	src/launcher.o

DATA = $(wildcard journey--*.sql)

# Every file in sql/ is a regression test; each one creates the extension
# afresh, so they are independent and may be added without editing this file.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=plpgsql

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config

# The tz database the server reads: IANA zone names are its files (util.c).
JOURNEY_TZDIR := $(or $(patsubst --with-system-tzdata=%,%,$(filter --with-system-tzdata=%,$(subst ',,$(shell $(PG_CONFIG) --configure)))),$(shell $(PG_CONFIG) --sharedir)/timezone)

# JOURNEY_VERSION (the HTTP User-Agent) comes from EXTVERSION, so it never
# goes stale.
PG_CPPFLAGS = -I$(srcdir)/src -std=gnu99 -DJOURNEY_TZDIR='"$(JOURNEY_TZDIR)"' \
	-DJOURNEY_VERSION='"$(EXTVERSION)"'
SHLIB_LINK = -lcurl

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
