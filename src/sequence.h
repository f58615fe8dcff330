/*-------------------------------------------------------------------------
 *
 * sequence.h
 *	  The pieces create_sequence (sequence.c) and update_sequence
 *	  (update_sequence.c) share to write a parsed definition: a sequence's
 *	  settings as statement parameters, the template check, the steps of
 *	  one version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_SEQUENCE_H
#define JOURNEY_SEQUENCE_H

#include "definition.h"

/* name, description, status, trigger_event_type, exit_event_types,
 * allow_manual_enroll, reentry, quiet_hours_start, quiet_hours_end,
 * rate_per_hour, rate_per_day */
#define JOURNEY_SETTINGS_NARGS 11

extern const Oid journey_settings_types[JOURNEY_SETTINGS_NARGS];

extern void journey_sequence_settings(JourneyDefinition *def, Datum *values, char *nulls);

/* 22023 naming the step and template_id unless each template is the
 * business's and of the step's channel; in the caller's SPI connection. */
extern void journey_check_step_templates(Datum business_id, JourneyDefinition *def);

/* Inserts def's steps as the given version; in the caller's SPI connection. */
extern void journey_write_steps(Datum business_id, Datum sequence_id, int32 version,
								JourneyDefinition *def);

#endif							/* JOURNEY_SEQUENCE_H */
