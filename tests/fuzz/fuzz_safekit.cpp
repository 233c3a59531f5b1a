// libFuzzer target: arbitrary bytes as a SafeKit userconfig.xml (and, after a NUL byte, its
// cluster.xml, and after a second one the node to import for) through import_safekit. An
// import either fails with a located error, or gives a TOML that config::parse loads
// without any error, with exactly the tables the importer meant: a value from the XML that
// broke out of its string or comment would add or lose [[vip]], [[group]] or [[checker]].
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <tuple>

#include "vipfarm/config/config.hpp"
#include "vipfarm/tools/safekit.hpp"

namespace {

using vipfarm::config::SafekitImport;
using vipfarm::config::SafekitNote;

// A module's path, so the cluster name comes from its directory as in real use.
constexpr std::string_view kSource = "SAFE/modules/farm/conf/userconfig.xml";

// The text up to the next NUL byte; `rest` keeps what follows it.
std::string_view take_part(std::string_view& rest) {
  const std::size_t nul = rest.find('\0');
  const std::string_view part = rest.substr(0, nul);
  rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  return part;
}

// Lines of `toml` that start with `header` exactly (commented hints start with "# ").
std::size_t count_lines(std::string_view toml, std::string_view header) {
  std::size_t count = 0;
  for (std::size_t start = 0; start < toml.size();) {
    std::size_t end = toml.find('\n', start);
    if (end == std::string_view::npos) end = toml.size();
    if (toml.substr(start, end - start).starts_with(header)) ++count;
    start = end + 1;
  }
  return count;
}

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_safekit: %s: %s\n", what, detail.c_str());
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view userconfig = take_part(rest);
  vipfarm::config::SafekitOptions options;
  options.cluster_xml = take_part(rest);
  options.node = take_part(rest);

  const SafekitImport r = vipfarm::config::import_safekit(userconfig, kSource, options);

  // Notes: the user's file first, then the cluster.xml; by line within each.
  for (std::size_t i = 1; i < r.notes.size(); ++i) {
    const SafekitNote& a = r.notes[i - 1];
    const SafekitNote& b = r.notes[i];
    if (std::make_tuple(a.file != kSource, a.file, a.line) >
        std::make_tuple(b.file != kSource, b.file, b.line)) {
      fail("notes out of order", a.to_string() + " before " + b.to_string());
    }
    if (b.message.empty()) fail("a note without a message", b.to_string());
  }

  if (r.error) {
    if (!r.toml.empty()) fail("an error and a TOML", r.error->to_string());
    if (r.error->message.empty()) fail("an error without a message", r.error->to_string());
    if (r.error->file != kSource && r.error->file != options.cluster_xml_source) {
      fail("an error in an unknown file", r.error->to_string());
    }
    // The importer's own check that its TOML loads, or an exception it caught: both are
    // bugs of the importer, not of the input.
    if (r.error->message.starts_with("internal error") ||
        r.error->message.starts_with("import failed")) {
      fail("importer bug", r.error->to_string());
    }
    return 0;
  }

  const vipfarm::config::LoadResult loaded = vipfarm::config::parse(r.toml, "imported.toml");
  if (!loaded.config) {
    for (const vipfarm::config::Error& e : loaded.errors) {
      std::fprintf(stderr, "%s\n", e.to_string().c_str());
    }
    fail(loaded.errors.front().key == "(syntax)" ? "the TOML does not parse"
                                                 : "the TOML does not validate",
         r.toml);
  }
  const vipfarm::config::Config& config = *loaded.config;
  if (count_lines(r.toml, "[[cluster.node]]") != config.nodes.size() ||
      count_lines(r.toml, "[[vip]]") != config.vips.size() ||
      count_lines(r.toml, "[[group]]") != config.groups.size() ||
      count_lines(r.toml, "[[checker]]") != config.checkers.size()) {
    fail("tables in the TOML and in the loaded config differ", r.toml);
  }
  // The notes close the TOML, one comment line each: none of them broke its line.
  constexpr std::string_view kNotes = "\n# Notes from the import:\n";
  const std::size_t notes_at = r.toml.rfind(kNotes);
  if (notes_at == std::string::npos) fail("no notes section", r.toml);
  const std::string_view listed = std::string_view(r.toml).substr(notes_at + kNotes.size());
  if (count_lines(listed, "") != r.notes.size() || count_lines(listed, "#   ") != r.notes.size()) {
    fail("the notes section does not list every note on its own line", r.toml);
  }
  return 0;
}
