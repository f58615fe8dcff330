-- render_template: the template engine the executor renders messages with.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;

\i test/sql/helpers.sql

\set ctx '{"customer": {"full_name": "Ada  King Lovelace", "email": "ada@example.com", "phone": null, "attributes": {"plan": "gold", "visits": 4, "vip": true, "pet": {"name": "Rex"}}}, "business": {"name": "Pipe Dreams", "phone": "+15550100"}, "review_link": "https://g.page/r/x", "enrollment": {"meta": {"source": "front desk"}}, "event": {"invoice": "INV-7", "amount": 120.5}}'

SELECT journey.render_template('Hi {{customer.first_name}}!', :'ctx');
SELECT journey.render_template('{{ customer.name }} / {{customer.full_name}}', :'ctx');
SELECT journey.render_template('{{customer.email}} {{business.name}} {{business.phone}}', :'ctx');
SELECT journey.render_template('Review: {{review_link}}', :'ctx');
SELECT journey.render_template('{{enrollment.meta.source}} {{event.invoice}} {{event.amount}}', :'ctx');
-- customer.<attribute>, nested attributes, non-string values
SELECT journey.render_template('{{customer.plan}} {{customer.visits}} {{customer.vip}} {{customer.pet.name}}', :'ctx');
-- default: used for a missing, null or empty value, with either quote and escapes
SELECT journey.render_template('Call {{ customer.phone | default: "us" }}', :'ctx');
SELECT journey.render_template($$Hi {{customer.nickname|default:'friend'}}$$, :'ctx');
SELECT journey.render_template('{{ customer.nickname | default: "say \"hi\"" }}', :'ctx');
SELECT journey.render_template('{{ event.missing | default: "" }}[empty default]', :'ctx');
-- text without tags, lone braces, multibyte text
SELECT journey.render_template('No tags { here } at all', :'ctx');
SELECT journey.render_template('Grüße, {{customer.first_name}} ✓', :'ctx');
SELECT journey.render_template('', :'ctx') = '' AS empty_template;
-- first_name of a one-word name, and of a context with only "name"
SELECT journey.render_template('{{customer.first_name}}', '{"customer": {"full_name": "Cher"}}');
SELECT journey.render_template('{{customer.first_name}}', '{"customer": {"name": "Bob Ross"}}');

-- Missing values and malformed templates: 22023 with the path or position.
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{customer.nickname}}', '{"customer": {}}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Call {{customer.phone}}', '{"customer": {"phone": null}}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('{{review_link}}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{customer.name', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{}}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ 9lives }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer..name }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer.name | upper }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer.name | default "x" }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer.name | default: x }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer.name | default: "x }}', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi {{ customer.name } }', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Grüße {{ customer.name', '{}')$$);
SELECT pg_temp.try($$SELECT journey.render_template('Hi', '[1]')$$);
SELECT journey.render_template(NULL, '{}') IS NULL AS null_in_null_out;
