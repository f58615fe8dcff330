# journey: PGXS build of the extension, its regression tests and its TAP tests.

EXTENSION = journey
MODULE_big = journey
EXTVERSION = 0.3

OBJS = \
	src/journey.o \
	src/util.o \
	src/tenant.o \
	src/template.o \
	src/sequence.o \
	src/enroll.o \
	src/trigger.o \
	src/timewindow.o \
	src/branch.o \
	src/executor.o \
	src/executor_sql.o \
	src/cron.o \
	src/outbound.o \
	src/providers.o \
	src/transport.o \
	src/worker.o \
	src/launcher.o

DATA = $(wildcard journey--*.sql)

# Every file in sql/ is a regression test; each one creates the extension
# afresh, so they are independent and may be added without editing this file.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=plpgsql

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CPPFLAGS = -I$(srcdir)/src -std=gnu99
SHLIB_LINK = -lcurl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
