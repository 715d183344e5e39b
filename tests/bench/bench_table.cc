// The one table of a scripts/bench run (a plain program): reads the figures the bench programs
// appended to the results file (bench_report.h, one JSON object per line), prints them side by
// side with their references, ratios and targets, and writes the same as one JSON document with
// the machine it ran on.
//
//   bench_table --results FILE [--json OUT] [--meta KEY=VALUE]...
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "base/json.h"

namespace {

using namespace cakewalk;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "bench_table: %s\n", what.c_str());
  std::exit(1);
}

std::string FirstLineWith(const std::string& path, const std::string& prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) return "";
      std::string v = line.substr(colon + 1);
      const std::size_t first = v.find_first_not_of(" \t");
      return first == std::string::npos ? "" : v.substr(first);
    }
  }
  return "";
}

Json::Value Machine() {
  Json::Value m(Json::objectValue);
  m["nproc"] = static_cast<Json::Int64>(::sysconf(_SC_NPROCESSORS_ONLN));
  m["cpu_model"] = FirstLineWith("/proc/cpuinfo", "model name");
  m["cpu_mhz"] = FirstLineWith("/proc/cpuinfo", "cpu MHz");
  m["memory"] = FirstLineWith("/proc/meminfo", "MemTotal");
  utsname u{};
  if (::uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream load("/proc/loadavg");
  std::string l1, l5, l15;
  load >> l1 >> l5 >> l15;
  m["load_average_at_end"] = l1 + " " + l5 + " " + l15;
  return m;
}

std::string Number(double v) {
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 1000) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (a >= 100) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else if (a >= 10) {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f", v);
  }
  return buf;
}

std::string WithUnit(const Json::Value& v, const std::string& unit) {
  if (!v.isNumeric()) return "-";
  return Number(v.asDouble()) + (unit.empty() ? "" : " " + unit);
}

std::string Pad(const std::string& s, std::size_t width) {
  // Widths count bytes; the table's text is ASCII.
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

}  // namespace

int main(int argc, char** argv) {
  std::string results, json_out;
  Json::Value meta(Json::objectValue);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--results" && i + 1 < argc) {
      results = argv[++i];
    } else if (a == "--json" && i + 1 < argc) {
      json_out = argv[++i];
    } else if (a == "--meta" && i + 1 < argc) {
      const std::string kv = argv[++i];
      const std::size_t eq = kv.find('=');
      if (eq == std::string::npos) Die("--meta wants KEY=VALUE, got " + kv);
      meta[kv.substr(0, eq)] = kv.substr(eq + 1);
    } else {
      Die("usage: bench_table --results FILE [--json OUT] [--meta KEY=VALUE]...");
    }
  }
  if (results.empty()) Die("--results FILE is required");

  Json::Value figures(Json::arrayValue);
  {
    std::ifstream in(results);
    if (!in) Die("cannot read " + results);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.empty()) continue;
      auto v = ParseJson(line, "figure");
      if (!v.ok() || !v->isObject()) Die(results + ":" + std::to_string(n) + ": not a figure");
      figures.append(*v);
    }
  }

  struct Row {
    std::string name, value, reference, ratio, target, result;
  };
  std::vector<Row> rows;
  rows.push_back({"figure", "value", "reference (same run)", "ratio", "target", "result"});
  std::vector<std::string> notes;
  int met = 0, missed = 0, untargeted = 0, not_run = 0;
  for (const Json::Value& f : figures) {
    const std::string unit = f["unit"].asString();
    Row r;
    r.name = f["name"].asString();
    r.value = f["value"].isNull() ? "not run" : WithUnit(f["value"], unit);
    r.reference = "-";
    if (f["reference"].isNumeric()) {
      r.reference = WithUnit(f["reference"], unit);
      if (!f["reference_name"].asString().empty()) {
        r.reference += " " + f["reference_name"].asString();
      }
    }
    r.ratio = f["ratio"].isNumeric() ? Number(f["ratio"].asDouble()) : "-";
    r.target = f["target"].asString().empty() ? "-" : f["target"].asString();
    if (f["value"].isNull()) {
      r.result = "not run";
      ++not_run;
    } else if (f["met"].isBool()) {
      r.result = f["met"].asBool() ? "met" : "MISSED";
      ++(f["met"].asBool() ? met : missed);
    } else {
      r.result = "";
      ++untargeted;
    }
    if (!f["note"].asString().empty()) {
      notes.push_back(f["note"].asString());
      r.name += " [" + std::to_string(notes.size()) + "]";
    }
    rows.push_back(std::move(r));
  }

  std::size_t w[6] = {};
  for (const Row& r : rows) {
    const std::string* cells[6] = {&r.name, &r.value, &r.reference, &r.ratio, &r.target, &r.result};
    for (int i = 0; i < 6; ++i) w[i] = std::max(w[i], cells[i]->size());
  }
  std::ostringstream table;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const Row& r = rows[k];
    table << Pad(r.name, w[0]) << "  " << Pad(r.value, w[1]) << "  " << Pad(r.reference, w[2])
          << "  " << Pad(r.ratio, w[3]) << "  " << Pad(r.target, w[4]) << "  " << r.result << '\n';
    if (k == 0) {
      table << std::string(w[0] + w[1] + w[2] + w[3] + w[4] + w[5] + 10, '-') << '\n';
    }
  }
  for (std::size_t i = 0; i < notes.size(); ++i) {
    table << "[" << i + 1 << "] " << notes[i] << '\n';
  }
  const Json::Value machine = Machine();
  table << "targets: " << met << " met, " << missed << " missed";
  if (not_run > 0) table << ", " << not_run << " not run";
  table << "; " << untargeted << " figures without a target\n";
  table << "machine: " << machine["nproc"].asInt64() << " CPUs, " << machine["cpu_model"].asString()
        << ", load average at the end " << machine["load_average_at_end"].asString() << '\n';
  std::cout << table.str();

  if (!json_out.empty()) {
    Json::Value doc(Json::objectValue);
    doc["meta"] = meta;
    doc["machine"] = machine;
    doc["figures"] = figures;
    doc["summary"]["met"] = met;
    doc["summary"]["missed"] = missed;
    doc["summary"]["not_run"] = not_run;
    doc["summary"]["without_target"] = untargeted;
    std::ofstream out(json_out);
    out << WritePrettyJson(doc) << '\n';
    if (!out) Die("cannot write " + json_out);
  }
  return 0;
}
