/*-------------------------------------------------------------------------
 *
 * optout.h
 *	  Opt-outs and delivery feedback (SPEC section 9) and the send rules of
 *	  0.3 (frequency caps, the SMS window): what the executor, the sender
 *	  and the SQL functions of suppress.c, unsubscribe.c, inbound.c,
 *	  delivery.c and send_rules.c share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_OPTOUT_H
#define JOURNEY_OPTOUT_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

struct pg_tz;

/* GUCs */
extern char *journey_unsubscribe_url;
extern char *journey_sms_window;
extern void journey_optout_define_gucs(void);

/* suppress.c: in the caller's SPI connection, as the tables' owner */
/*
 * Suppresses addresses (a text[] datum) of one business for a channel,
 * cancels its queued messages to them, and returns how many suppressions
 * are new.  Existing suppressions keep their reason.
 */
extern int	journey_suppress(Datum business_id, const char *channel, Datum addresses,
							 const char *reason);
/* Suppresses the address of message message_id with reason (sender, callbacks). */
extern void journey_suppress_message_address(int64 message_id, const char *reason);

/* unsubscribe.c */
/* The unsubscribe URL for an address, or NULL while journey.unsubscribe_url is empty. */
extern char *journey_unsubscribe_url_for(Datum business_id, const char *channel,
										 const char *address);

/* delivery.c: the suppression reason for a Twilio send error code, or NULL */
extern const char *journey_twilio_error_suppression(const char *code);

/*
 * delivery.c: applies the callbacks that arrived before the sender wrote
 * these messages' provider ids (an int8[] datum); in the sender's
 * transaction.
 */
extern void journey_apply_early_deliveries(Datum message_ids);

/* send_rules.c: the executor's hooks */
/*
 * True when a frequency cap of the business forbids a message of purpose
 * to the customer at run_at; *detail then names the earlier message.
 */
extern bool journey_frequency_cap_hit(Datum business_id, Datum customer_id,
									  const char *purpose, TimestampTz run_at,
									  char **detail);
/* Remembers a message the executor will queue, for the caps of later sends. */
extern void journey_frequency_cap_note(Datum business_id, Datum customer_id,
									   const char *purpose, TimestampTz at);
/*
 * True when an SMS at t would fall outside journey.sms_window in zone tz;
 * *run_at is then the window's next start.
 */
extern bool journey_sms_window_defer(TimestampTz t, struct pg_tz *tz,
									 TimestampTz *run_at);

#endif							/* JOURNEY_OPTOUT_H */
