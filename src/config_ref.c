/*
 * config_ref.c: the configuration reference behind
 * `portcullis config-reference` and the README's generated section: one
 * Markdown table row per schema key, generated from the tables in
 * config_schema*.c.
 *
 * Guarantees: the output depends on the tables alone (no snapshot, no
 * file other than out), rows come in table order with nested keys after
 * their parent, and a '|' in a cell is escaped.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "config_int.h"

/* Print a Markdown table cell, escaping the column separator. */
static void
cfg_md(FILE *out, const char *s)
{
	fputs(" ", out);
	for (; *s != '\0'; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputs(" |", out);
}

static void
cfg_reference_keys(FILE *out, const struct cfg_key *keys, const char *ptr,
    int fixed)
{
	const struct cfg_key	*k;
	const char		*type = "";
	char			 kptr[CFG_PTR_MAX], eptr[CFG_PTR_MAX];
	char			 def[256], range[256], cell[CFG_PTR_MAX + 4];
	int			 f, j;

	for (k = keys; k->name != NULL; k++) {
		cfg_ptr(kptr, sizeof(kptr), ptr, k->name);
		f = fixed || !(k->flags & CFG_RELOAD);
		def[0] = range[0] = '\0';
		switch (k->type) {
		case CFG_STRING:
			type = "string";
			if (k->def_str != NULL)
				snprintf(def, sizeof(def), "`%s`", k->def_str);
			break;
		case CFG_PATH:
			type = "file";
			break;
		case CFG_ENUM:
			type = "string";
			snprintf(def, sizeof(def), "`%s`", k->choices[k->def]);
			for (j = 0; k->choices[j] != NULL; j++)
				snprintf(range + strlen(range),
				    sizeof(range) - strlen(range), "%s`%s`",
				    j > 0 ? ", " : "", k->choices[j]);
			break;
		case CFG_BOOL:
			type = "boolean";
			snprintf(def, sizeof(def), "`%s`",
			    k->def ? "true" : "false");
			break;
		case CFG_INT:
		case CFG_SIZE:
			type = "integer";
			snprintf(def, sizeof(def), "`%lld`", k->def);
			snprintf(range, sizeof(range), "%lld..%lld", k->min,
			    k->max);
			break;
		case CFG_SECONDS:
			type = "seconds";
			snprintf(def, sizeof(def), "`%g`", k->def / 1000.0);
			snprintf(range, sizeof(range), "%g..%g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		case CFG_FRACTION:
			type = "number";
			snprintf(def, sizeof(def), "`%g`", k->def / 1000.0);
			snprintf(range, sizeof(range), "%g..%g",
			    k->min / 1000.0, k->max / 1000.0);
			break;
		case CFG_STRLIST:
			type = "array of strings";
			snprintf(range, sizeof(range), "%lld..%lld entries",
			    k->min, k->max);
			break;
		case CFG_OBJECT:
		case CFG_PTR_OBJECT:
			type = "object";
			break;
		case CFG_ARRAY:
			type = k->flags & CFG_SHORTHAND ?
			    "array of objects or strings" : "array of objects";
			snprintf(range, sizeof(range), "%lld..%lld entries",
			    k->min, k->max);
			break;
		}
		if (k->flags & CFG_REQUIRED)
			snprintf(def, sizeof(def), "required");
		else if (k->def_doc != NULL)
			snprintf(def, sizeof(def), "%s", k->def_doc);

		fputs("|", out);
		snprintf(cell, sizeof(cell), "`%s`", kptr);
		cfg_md(out, cell);
		cfg_md(out, type);
		cfg_md(out, def);
		cfg_md(out, range);
		cfg_md(out, k->type == CFG_OBJECT ? "" : f ? "no" : "yes");
		cfg_md(out, k->help);
		fputs("\n", out);

		if (k->type == CFG_OBJECT)
			cfg_reference_keys(out, k->sub, kptr, fixed);
		else if (k->type == CFG_PTR_OBJECT)
			cfg_reference_keys(out, k->sub, kptr, f);
		else if (k->type == CFG_ARRAY) {
			cfg_ptr(eptr, sizeof(eptr), kptr, "N");
			cfg_reference_keys(out, k->sub, eptr, f);
		}
	}
}

/*
 * Print the configuration reference, generated from the schema tables, as
 * a Markdown table.  N in a key stands for an array index.
 */
void
config_reference(FILE *out)
{
	fputs("| Key | Type | Default | Allowed | Reload | Description |\n",
	    out);
	fputs("| --- | --- | --- | --- | --- | --- |\n", out);
	cfg_reference_keys(out, cfg_root_keys, "", 0);
}
