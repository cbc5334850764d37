#!/usr/bin/env bash
# The verdict and the chart of a soak run (benches/wrk/soak.sh calls it; it also re-reads an old
# CSV). Over the last 20 minutes (the last two thirds of a shorter run):
#   RSS: the highest sample is at most 5 % above the first;
#   descriptors: no trend, the least-squares line moves by at most 4 across the window (the
#     count swings with the flapping backend's connections; a leak climbs);
#   no non-2xx answer but the planned 429s, no socket error, and at least one reload per 5 minutes.
#
#   benches/wrk/soak-report.sh CSV OUT_DIR MINUTES CONNECTIONS RELOADS
set -euo pipefail
csv="$1" out="$2" minutes="$3" connections="$4" reloads="$5"
slices=$(($(wc -l < "$csv") - 1))
window=$(( minutes >= 30 ? 120 : slices * 2 / 3 ))
[ "$window" -ge 2 ] || window=$slices
read -r growth drift fmin fmax <<<"$(tail -n "$window" "$csv" | awk -F, '
  NR == 1 { rss0 = $2; fmin = $3; fmax = $3 }
  { if ($2 > rmax) rmax = $2; if ($3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3
    n++; sx += $1; sy += $3; sxx += $1 * $1; sxy += $1 * $3; first = (n == 1 ? $1 : first); last = $1 }
  END {
    slope = (n * sxx - sx * sx) > 0 ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0
    printf "%.1f %.1f %d %d", (rmax - rss0) * 100 / rss0, slope * (last - first), fmin, fmax
  }')"
read -r requests planned other errors <<<"$(tail -n +2 "$csv" | awk -F, '{r += $5; p += $6; o += $7; e += $8} END {print r, p, o, e}')"
status=PASS
awk -v g="$growth" -v d="$drift" 'BEGIN { exit !(g <= 5 && d <= 4 && d >= -4) }' || status=FAIL
[ "$other" = 0 ] && [ "$errors" = 0 ] && [ "$reloads" -ge $((minutes / 5)) ] || status=FAIL
summary="soak $status: ${minutes} min, $requests requests, $planned planned 429s, $other other non-2xx, $errors socket errors; over the last $((window / 6)) min: RSS growth ${growth} % (limit 5 %), descriptors $fmin..$fmax with a trend of ${drift} (limit ±4), $reloads reloads"
echo "$summary" | tee "$out/verdict.txt"

chart="$(mktemp /tmp/edgegate-soak-chart.XXXXXX)"
cat > "$chart" <<GP
set terminal pngcairo size 1000,900 font ",10"
set output "$out/soak.png"
set datafile separator ","
set multiplot layout 3,1 title "edgegate soak: $minutes min, $connections connections, full gateway (one backend down 30 s of every minute, SIGHUP every 5 min)"
set xlabel "minutes"
set grid
set key off
set yrange [0:*]
set ylabel "RSS (MiB)"
plot "$csv" every ::1 using (\$1/60):(\$2/1024) with lines lw 2
set ylabel "open descriptors"
plot "$csv" every ::1 using (\$1/60):3 with lines lw 2
set ylabel "p99 (ms)"
plot "$csv" every ::1 using (\$1/60):(\$4/1000) with lines lw 2
unset multiplot
GP
gnuplot "$chart" && echo "chart: $out/soak.png" >&2
rm -f "$chart"
[ "$status" = PASS ]
