// What every bench program hands to scripts/bench besides its printed lines (header only).
//
// - Figures: one JSON object per line appended to the file named by BENCH_RESULTS (when set).
//   scripts/bench collects them into one table and build-bench/bench.json (bench_table).
// - Percentile: the summary statistic the programs share.
// - Time series: whitespace-separated columns, one row per line, in files under BENCH_SERIES
//   (when set), named <section>-<what>.dat; `scripts/bench --plot` draws them with gnuplot.
//
// A figure carries its measured value, the reference measured in the same run (where there is
// one: a floor, a raw path, a smaller site), their ratio, the target in words and whether it was
// met. Programs decide `met` themselves: they know what the target compares.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "base/json.h"

namespace cakewalk::bench {

struct Figure {
  std::string section;  // the scripts/bench section: "pickup", "sync", ...
  std::string id;       // stable key: "sync.ratio_100k"
  std::string name;     // for people: "access sync 100k users, wall time"
  double value = 0;
  bool measured = true;  // false: not run this time (`note` says why); value is null
  std::string unit;      // "ms", "jobs/s", "MiB", "/s", "ops/s"
  std::optional<double> reference;
  std::string reference_name;   // short: "fetch floor", "raw C_Sign"
  std::optional<double> ratio;  // as the target reads it (value / reference unless said)
  std::string target;           // in words: "ratio <= 1.2", "p99 <= 25 ms"; empty: none
  std::optional<bool> met;      // nullopt: no target
  std::string note;             // what was run, when it differs from the default
};

inline Json::Value ToJson(const Figure& f) {
  Json::Value j(Json::objectValue);
  j["section"] = f.section;
  j["id"] = f.id;
  j["name"] = f.name;
  j["value"] = f.measured ? Json::Value(f.value) : Json::Value(Json::nullValue);
  j["unit"] = f.unit;
  j["reference"] = f.reference ? Json::Value(*f.reference) : Json::Value(Json::nullValue);
  j["reference_name"] = f.reference_name;
  j["ratio"] = f.ratio ? Json::Value(*f.ratio) : Json::Value(Json::nullValue);
  j["target"] = f.target;
  j["met"] = f.met ? Json::Value(*f.met) : Json::Value(Json::nullValue);
  j["note"] = f.note;
  return j;
}

// Appends the figure to $BENCH_RESULTS; nothing when the variable is unset (a program run by
// hand prints its own lines).
inline void Report(const Figure& f) {
  const char* path = std::getenv("BENCH_RESULTS");
  if (path == nullptr || *path == '\0') return;
  std::ofstream out(path, std::ios::app);
  out << WriteJson(ToJson(f)) << '\n';
  if (!out) std::fprintf(stderr, "bench: cannot append to %s\n", path);
}

// The path of a series file under $BENCH_SERIES (created), or nullopt when unset.
inline std::optional<std::filesystem::path> SeriesPath(const std::string& name) {
  const char* dir = std::getenv("BENCH_SERIES");
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return std::filesystem::path(dir) / name;
}

// The value at fraction `p` (0..1) of the sorted samples, nearest rank; p = 0.5 is the median.
inline double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

}  // namespace cakewalk::bench
