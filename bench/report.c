/* iol-bench — results: min/median/max over repeats, the human table, the
 * JSON lines of BENCH.md, target lines and the gnuplot SVG. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"

void bench_report_init(bench_report *r, const char *bench, const bench_fig_spec *figs, int nfigs)
{
    memset(r, 0, sizeof *r);
    r->bench = bench;
    snprintf(r->title, sizeof r->title, "%s", bench);
    snprintf(r->params_json, sizeof r->params_json, "{}");
    r->figs = figs;
    r->nfigs = nfigs < BENCH_MAX_FIGS ? nfigs : BENCH_MAX_FIGS;
}

int bench_report_impl(bench_report *r, const char *impl, const char *label)
{
    for (int i = 0; i < r->nimpls; i++)
        if (strcmp(r->impls[i].label, label) == 0)
            return i;
    if (r->nimpls == BENCH_MAX_IMPLS)
        abort(); /* a programming error in a bench, not a run-time condition */
    bench_impl *im = &r->impls[r->nimpls];
    im->impl = impl;
    im->label = label;
    return r->nimpls++;
}

void bench_report_add(bench_report *r, int impl, int fig, double value)
{
    bench_impl *im = &r->impls[impl];
    if (isnan(value) || fig >= r->nfigs || im->n[fig] == BENCH_MAX_REPEAT)
        return;
    im->v[fig][im->n[fig]++] = value;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bool bench_stats(const bench_impl *im, int fig, double *min, double *median, double *max)
{
    int n = im->n[fig];
    if (n == 0)
        return false;
    double s[BENCH_MAX_REPEAT];
    memcpy(s, im->v[fig], (size_t)n * sizeof s[0]);
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    *min = s[0];
    *max = s[n - 1];
    *median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    return true;
}

void bench_human(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (a >= 1e9)
        snprintf(buf, len, "%.3gG", v / 1e9);
    else if (a >= 1e6)
        snprintf(buf, len, "%.3gM", v / 1e6);
    else if (a >= 1e4)
        snprintf(buf, len, "%.3gk", v / 1e3);
    else if (a >= 1000)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.3g", v);
}

static double median_of(const bench_report *r, int impl, int fig)
{
    double lo, med, hi;
    return bench_stats(&r->impls[impl], fig, &lo, &med, &hi) ? med : NAN;
}

static int find_impl(const bench_report *r, const char *impl)
{
    for (int i = 0; i < r->nimpls; i++)
        if (strcmp(r->impls[i].impl, impl) == 0)
            return i;
    return -1;
}

static void print_table(const bench_report *r, FILE *f)
{
    int ours = find_impl(r, "ioloop");
    bool first = true;
    for (int fig = 0; fig < r->nfigs; fig++) {
        if (!r->figs[fig].full)
            continue;
        char head[96];
        snprintf(head, sizeof head, "%s (min / median / max)", r->figs[fig].label);
        fprintf(f, "%-18s %-16s %-36s", first ? r->title : "", "impl", head);
        for (int x = 0; x < r->nfigs; x++)
            if (!r->figs[x].full)
                fprintf(f, " %12s", r->figs[x].label);
        fprintf(f, "  vs ioloop\n");
        first = false;
        for (int i = 0; i < r->nimpls; i++) {
            const bench_impl *im = &r->impls[i];
            double lo, med, hi;
            char cell[96] = "-";
            if (bench_stats(im, fig, &lo, &med, &hi)) {
                char a[24], b[24], c[24];
                bench_human(a, sizeof a, lo);
                bench_human(b, sizeof b, med);
                bench_human(c, sizeof c, hi);
                snprintf(cell, sizeof cell, "%s / %s / %s", a, b, c);
            }
            fprintf(f, "%-18s %-16s %-36s", "", im->label, cell);
            for (int x = 0; x < r->nfigs; x++) {
                if (r->figs[x].full)
                    continue;
                double m = median_of(r, i, x);
                char e[24] = "-";
                if (!isnan(m))
                    snprintf(e, sizeof e, "%.3g", m);
                fprintf(f, " %12s", e);
            }
            /* impl / ioloop, as the issue asks: for times "libuv/ioloop"
             * > 1 means ioloop is faster; for rates < 1 means it is. */
            double mine = median_of(r, i, fig), base = ours >= 0 ? median_of(r, ours, fig) : NAN;
            if (!isnan(mine) && !isnan(base) && base != 0)
                fprintf(f, "  %9.2f\n", mine / base);
            else
                fprintf(f, "  %9s\n", "-");
        }
    }
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, double v)
{
    /* Big rates as integers so they read well; the rest with 6 digits. */
    if (fabs(v) >= 1e6 && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.6g", v);
}

static void print_json(const bench_report *r)
{
    bench_machine m;
    bench_machine_read(&m);
    for (int i = 0; i < r->nimpls; i++) {
        const bench_impl *im = &r->impls[i];
        printf("{\"bench\":");
        json_string(stdout, r->bench);
        printf(",\"impl\":");
        json_string(stdout, im->impl);
        printf(",\"label\":");
        json_string(stdout, im->label);
        printf(",\"params\":%s,\"machine\":{\"cpu\":", r->params_json);
        json_string(stdout, m.cpu);
        printf(",\"cpus\":%d,\"kernel\":", m.cpus);
        json_string(stdout, m.kernel);
        printf("},\"tool_version\":");
        json_string(stdout, "iol-bench " IOL_BENCH_VERSION);
        printf(",\"results\":{");
        bool comma = false;
        for (int fig = 0; fig < r->nfigs; fig++) {
            double lo, med, hi;
            if (!bench_stats(im, fig, &lo, &med, &hi))
                continue; /* not measured for this impl: left out, not null */
            const char *n = r->figs[fig].name;
            printf("%s\"%s\":", comma ? "," : "", n);
            json_number(stdout, med);
            printf(",\"%s_min\":", n);
            json_number(stdout, lo);
            printf(",\"%s_max\":", n);
            json_number(stdout, hi);
            comma = true;
        }
        printf("},\"repeats\":%d}\n", im->n[0]);
    }
    fflush(stdout);
}

void bench_report_print(const bench_report *r, const bench_opts *o)
{
    bench_progress_done();
    FILE *f = o->json ? stderr : stdout;
    print_table(r, f);
    fprintf(f, "%-18s (vs ioloop: impl / ioloop of the medians; for times and bytes > 1 means ioloop\n"
               "%-18s  is better, for rates < 1 does; repeats interleaved, %d per impl)\n\n",
            "", "", r->nimpls ? r->impls[0].n[0] : 0);
    fflush(f);
    if (o->json)
        print_json(r);
}

void bench_report_target(const bench_report *r, const bench_opts *o, int fig, const char *other_impl,
                         double target)
{
    FILE *f = o->json ? stderr : stdout;
    int ours = find_impl(r, "ioloop"), other = -1;
    for (int i = 0; i < r->nimpls; i++)
        if (strcmp(r->impls[i].label, other_impl) == 0)
            other = i;
    if (ours < 0 || other < 0)
        return;
    double a = median_of(r, ours, fig), b = median_of(r, other, fig);
    if (isnan(a) || isnan(b) || a == 0 || b == 0)
        return;
    double ratio = r->figs[fig].lower_better ? b / a : a / b;
    fprintf(f, "  %-18s ioloop vs %-14s %-14s %6.2fx  (target >= %gx)  %s\n", r->title, other_impl,
            r->figs[fig].label, ratio, target, ratio >= target ? "met" : "MISSED");
}

int bench_plot(const bench_opts *o, bench_report *const *reports, int nreports)
{
    if (!o->plot)
        return 0;
    if (strchr(o->plot, '\'')) {
        fprintf(stderr, "iol-bench: --plot path must not contain a quote\n");
        return -1;
    }
    int panels = 0;
    for (int k = 0; k < nreports; k++)
        for (int fig = 0; fig < reports[k]->nfigs; fig++)
            panels += reports[k]->figs[fig].full;
    if (panels == 0)
        return 0;
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        fprintf(stderr, "iol-bench: cannot run gnuplot\n");
        return -1;
    }
    fprintf(g, "set terminal svg size 800,%d dynamic font 'sans,11'\n", 260 * panels);
    fprintf(g, "set output '%s'\n", o->plot);
    fprintf(g, "set multiplot layout %d,1\n", panels);
    fprintf(g, "set style fill solid 0.5 border -1\nset boxwidth 0.6\nset yrange [0:*]\n");
    fprintf(g, "set grid ytics\nset xrange [-0.5:*]\n");
    /* ioloop's bar gets its own colour. */
    int d = 0;
    for (int k = 0; k < nreports; k++) {
        const bench_report *r = reports[k];
        for (int fig = 0; fig < r->nfigs; fig++) {
            if (!r->figs[fig].full)
                continue;
            fprintf(g, "$D%d << EOD\n", d);
            for (int i = 0; i < r->nimpls; i++) {
                double lo, med, hi;
                if (bench_stats(&r->impls[i], fig, &lo, &med, &hi))
                    fprintf(g, "\"%s\" %.9g %.9g %.9g\n", r->impls[i].label, med, lo, hi);
            }
            fprintf(g, "EOD\n");
            fprintf(g, "set title \"%s: %s (bar: median, whiskers: min-max; %s)\"\n", r->title, r->figs[fig].label,
                    r->figs[fig].lower_better ? "lower is better" : "higher is better");
            fprintf(g, "plot $D%d using 0:2:(0.6):(strcol(1) eq \"ioloop\" ? 2 : 3):xtic(1) with boxes lc variable notitle, "
                       "$D%d using 0:2:3:4 with yerrorbars lc rgb 'black' pt -1 notitle\n",
                    d, d);
            d++;
        }
    }
    fprintf(g, "unset multiplot\n");
    int rc = pclose(g);
    if (rc != 0) {
        fprintf(stderr, "iol-bench: gnuplot failed (status %d)\n", rc);
        return -1;
    }
    fprintf(o->json ? stderr : stdout, "plot written to %s\n", o->plot);
    return 0;
}

static bool progress_shown;

void bench_progress(const char *what, double elapsed_s, double rate, const char *unit)
{
    /* Only on a terminal: in logs a \r line is noise. */
    if (!isatty(STDERR_FILENO))
        return;
    char r[24];
    bench_human(r, sizeof r, rate);
    fprintf(stderr, "\r  %-40s %6.1fs  %8s %-10s", what, elapsed_s, r, unit);
    fflush(stderr);
    progress_shown = true;
}

void bench_progress_done(void)
{
    if (!progress_shown)
        return;
    fprintf(stderr, "\r%80s\r", "");
    fflush(stderr);
    progress_shown = false;
}
