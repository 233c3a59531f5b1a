// SafeKit import: each sample userconfig.xml (tests/fixtures/safekit, from the SafeKit user
// guide's farm examples) converts into a TOML that loads and says what the XML said; what
// cannot be mapped is reported with its element path; malformed XML names its position.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "vipfarm/config/config.hpp"
#include "vipfarm/tools/safekit.hpp"

namespace vipfarm::config {
namespace {

using Kind = SafekitNote::Kind;

std::string fixture(const std::string& name) {
  const std::string path = std::string(VIPFARM_SOURCE_DIR) + "/tests/fixtures/safekit/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string all_notes(const SafekitImport& r) {
  std::string out;
  for (const SafekitNote& n : r.notes) out += "\n  " + n.to_string();
  return out;
}

// The import's TOML loaded by the real loader; a failure prints the TOML and the errors.
Config load(const SafekitImport& r) {
  EXPECT_FALSE(r.error.has_value()) << r.error->to_string() << all_notes(r);
  const LoadResult loaded = parse(r.toml, "imported.toml");
  std::string errors;
  for (const Error& e : loaded.errors) errors += "\n  " + e.to_string();
  EXPECT_TRUE(loaded.errors.empty()) << errors << "\n" << r.toml;
  return loaded.config.value_or(Config{});
}

::testing::AssertionResult has_note(const SafekitImport& r, Kind kind, std::string_view path,
                                    std::string_view text) {
  for (const SafekitNote& n : r.notes) {
    if (n.kind == kind && n.path == path && n.message.find(text) != std::string::npos) {
      return ::testing::AssertionSuccess();
    }
  }
  return ::testing::AssertionFailure()
         << "no note at " << path << " containing \"" << text << "\" in:" << all_notes(r);
}

IpAddr ip(std::string_view text) { return IpAddr::parse(text).value(); }

SafekitImport import_fixture(const std::string& name, std::string_view node = "",
                             const std::string& cluster = "cluster_three_nodes.xml") {
  const std::string xml = fixture(name);
  const std::string cluster_xml = cluster.empty() ? "" : fixture(cluster);
  return import_safekit(xml, name, {.node = node, .cluster_xml = cluster_xml});
}

// A farm whose nodes are listed in userconfig.xml itself (the legacy syntax, §13.5.3).
std::string legacy_farm(std::string_view body, std::string_view farm_attributes = "") {
  return "<safe>\n<service mode=\"farm\">\n<farm" + std::string(farm_attributes) +
         "><lan name=\"default\">"
         "<node name=\"a\" addr=\"192.0.2.1\"/><node name=\"b\" addr=\"192.0.2.2\"/>"
         "</lan></farm>\n" +
         std::string(body) + "\n</service>\n</safe>\n";
}

constexpr std::string_view kVip =
    "<vip><interface_list><interface check=\"off\">"
    "<virtual_interface type=\"vmac_invisible\">"
    "<virtual_addr addr=\"198.51.100.50\" check=\"off\"/>"
    "</virtual_interface></interface></interface_list>"
    "<loadbalancing_list><group name=\"g\"><rule port=\"80\" proto=\"tcp\" filter=\"on_addr\"/>"
    "</group></loadbalancing_list></vip>";

TEST(SafekitImport, WebFarmConvertsAndLoads) {
  const SafekitImport r = import_fixture("web_farm.xml", "node2");
  const Config c = load(r);
  EXPECT_EQ(c.node_id, NodeId{2});
  EXPECT_EQ(c.node_name, "node2");
  EXPECT_EQ(c.cluster_name, "safekit");
  EXPECT_EQ(c.buckets, 256u);
  EXPECT_EQ(c.unmatched, Unmatched::kDrop);
  ASSERT_EQ(c.nodes.size(), 3u);
  EXPECT_EQ(c.nodes[0].name, "node1");
  EXPECT_EQ(c.nodes[0].address, ip("10.0.0.107"));
  EXPECT_EQ(c.nodes[1].address, ip("10.0.0.108"));
  EXPECT_EQ(c.nodes[2].name, "node3");
  EXPECT_EQ(c.nodes[2].address, ip("10.0.0.106"));
  ASSERT_EQ(c.vips.size(), 1u);
  EXPECT_EQ(c.vips[0].address, ip("10.1.0.127"));
  EXPECT_EQ(vipfarm::to_string(c.vips[0].mac), "5A:FE:0A:01:00:7F") << "SafeKit's default";
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].name, "FarmProto");
  EXPECT_EQ(c.groups[0].members.size(), 3u) << "no <cluster>: every node, weight 1";
  ASSERT_EQ(c.groups[0].rules.size(), 1u);
  const Rule& rule = c.groups[0].rules[0];
  EXPECT_FALSE(rule.vip.has_value());
  EXPECT_EQ(rule.proto, Proto::kTcp);
  EXPECT_EQ(rule.ports, (std::vector<PortRange>{{80, 80}}));
  EXPECT_EQ(rule.key, KeyKind::kOnAddr);
  EXPECT_TRUE(c.membership.present);
  EXPECT_EQ(c.membership.interval_ms, 100u) << "SafeKit's default pulse";
  EXPECT_EQ(c.membership.dead_after, 10u) << "SafeKit's default slost_count";
  EXPECT_EQ(c.membership.split_brain, SplitBrain::kServe);
  ASSERT_EQ(c.membership.keys.size(), 1u);
  EXPECT_EQ(c.membership.keys[0].file, std::string(kSafekitKeyFile));
  EXPECT_TRUE(c.membership.lans.empty());
  ASSERT_EQ(c.checkers.size(), 2u);
  EXPECT_EQ(c.checkers[0].name, "intf-eth0");
  EXPECT_EQ(c.checkers[0].kind, CheckerKind::kInterface);
  EXPECT_EQ(c.checkers[0].target, "eth0");
  EXPECT_EQ(c.checkers[1].name, "Apache_80");
  EXPECT_EQ(c.checkers[1].kind, CheckerKind::kTcp);
  EXPECT_EQ(c.checkers[1].target, "127.0.0.1:80");
  EXPECT_EQ(c.checkers[1].interval_ms, 10000u) << "SafeKit's default interval";
  EXPECT_EQ(c.checkers[1].timeout_ms, 5000u) << "SafeKit's default timeout";
  EXPECT_EQ(c.checkers[1].rise, 1u);
  EXPECT_EQ(c.checkers[1].fall, 1u);
  EXPECT_FALSE(c.checkers[1].group.has_value());

  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service/check/tcp/to", "localhost"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service/check/tcp", "action=\"restart\""));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/user", "scripts"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service", "boot=\"on\""));
  EXPECT_TRUE(has_note(r, Kind::kTodo, "", std::string(kSafekitKeyFile)));
  EXPECT_TRUE(has_note(r, Kind::kTodo, "", "uplink"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "", "cluster.name is \"safekit\""));
  EXPECT_NE(r.toml.find("# Notes from the import:"), std::string::npos);
  EXPECT_NE(r.toml.find("uplink = \"net_af_xdp0,iface=eth0,busy_budget=0\""), std::string::npos)
      << r.toml;
}

TEST(SafekitImport, PowerPerServerBecomesWeights) {
  const SafekitImport r = import_fixture("power.xml", "node1");
  const Config c = load(r);
  ASSERT_EQ(c.groups.size(), 3u);
  const std::vector<std::pair<std::string, std::vector<std::uint32_t>>> expected = {
      {"http_service", {3, 1, 1}}, {"https_service", {1, 3, 1}}, {"httpproxy_service", {1, 1, 3}}};
  const std::uint16_t ports[] = {80, 443, 8080};
  for (std::size_t g = 0; g < expected.size(); ++g) {
    SCOPED_TRACE(expected[g].first);
    EXPECT_EQ(c.groups[g].name, expected[g].first);
    ASSERT_EQ(c.groups[g].members.size(), 3u);
    for (std::size_t m = 0; m < 3; ++m) {
      EXPECT_EQ(c.groups[g].members[m].node, NodeId{static_cast<std::uint8_t>(m + 1)});
      EXPECT_EQ(c.groups[g].members[m].weight, expected[g].second[m]);
    }
    ASSERT_EQ(c.groups[g].rules.size(), 1u);
    EXPECT_EQ(c.groups[g].rules[0].ports, (std::vector<PortRange>{{ports[g], ports[g]}}));
    EXPECT_EQ(c.groups[g].rules[0].key, KeyKind::kOnAddr);
  }
  EXPECT_TRUE(has_note(r, Kind::kApproximated,
                       "/safe/service/vip/interface_list/interface/virtual_interface",
                       "vmac_directed"));
  ASSERT_FALSE(c.vips.empty());
  EXPECT_EQ(c.vips[0].l2_mode, L2Mode::kDirected) << "vmac_directed becomes l2_mode directed";
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/user", "SERVICES"));
  EXPECT_TRUE(
      has_note(r, Kind::kUnmapped, "/safe/service/vip/interface_list/interface", "needs its name"))
      << "check=\"on\" without a name cannot become an interface checker";
  EXPECT_TRUE(c.checkers.empty());
}

TEST(SafekitImport, SeveralRulesAndPortsKeepTheirOrder) {
  const SafekitImport r = import_fixture("rules.xml", "node3");
  const Config c = load(r);
  EXPECT_EQ(c.node_id, NodeId{3});
  ASSERT_EQ(c.groups.size(), 1u);
  const struct {
    Proto proto;
    std::uint16_t port;
    KeyKind key;
  } expected[] = {{Proto::kTcp, 23, KeyKind::kOnPort},  {Proto::kTcp, 80, KeyKind::kOnAddr},
                  {Proto::kTcp, 443, KeyKind::kOnAddr}, {Proto::kTcp, 8080, KeyKind::kOnAddr},
                  {Proto::kTcp, 389, KeyKind::kOnPort}, {Proto::kUdp, 53, KeyKind::kOnIpid},
                  {Proto::kUdp, 1645, KeyKind::kOnIpid}};
  const auto& rules = c.groups[0].rules;
  ASSERT_EQ(rules.size(), std::size(expected));
  for (std::size_t i = 0; i < rules.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(rules[i].proto, expected[i].proto);
    EXPECT_EQ(rules[i].ports, (std::vector<PortRange>{{expected[i].port, expected[i].port}}));
    EXPECT_EQ(rules[i].key, expected[i].key);
    EXPECT_FALSE(rules[i].vip.has_value());
  }
}

TEST(SafekitImport, CheckersTimersAndLegacyNodes) {
  const SafekitImport r = import_fixture("checkers.xml", "node2", "");
  const Config c = load(r);
  EXPECT_EQ(c.node_id, NodeId{2});
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_EQ(c.nodes[0].address, ip("192.168.1.67"));
  EXPECT_EQ(c.nodes[1].address, ip("192.168.1.68"));
  EXPECT_EQ(c.membership.port, 4850u);
  EXPECT_EQ(c.membership.interval_ms, 200u);
  EXPECT_EQ(c.membership.dead_after, 5u);
  ASSERT_EQ(c.membership.lans.size(), 1u);
  EXPECT_EQ(c.membership.lans[0].name, "repli");
  ASSERT_NE(c.membership.lans[0].find(NodeId{1}), nullptr);
  EXPECT_EQ(*c.membership.lans[0].find(NodeId{1}), ip("10.0.0.1"));
  EXPECT_EQ(*c.membership.lans[0].find(NodeId{2}), ip("10.0.0.2"));

  ASSERT_EQ(c.vips.size(), 2u);
  EXPECT_EQ(c.vips[0].address, ip("192.168.1.222"));
  EXPECT_EQ(vipfarm::to_string(c.vips[0].mac), "5A:FE:C0:A8:01:DE");
  EXPECT_EQ(c.vips[1].address, ip("2001:db8::222"));
  EXPECT_EQ(c.vips[1].mac, default_vip_mac(ip("2001:db8::222")));
  ASSERT_EQ(c.groups.size(), 1u);
  ASSERT_EQ(c.groups[0].rules.size(), 2u);
  EXPECT_EQ(c.groups[0].rules[0].vip, std::optional<std::size_t>(0));
  EXPECT_FALSE(c.groups[0].rules[1].vip.has_value());
  EXPECT_EQ(c.groups[0].rules[1].key, KeyKind::kOnPort);

  ASSERT_EQ(c.checkers.size(), 4u);
  const Checker expected[] = {
      {"intf-eth1", CheckerKind::kInterface, "eth1", 500, 400, 1, 1, std::nullopt},
      {"R1test", CheckerKind::kTcp, "192.168.1.10:80", 2000, 1500, 1, 1, std::nullopt},
      {"Apache_80", CheckerKind::kTcp, "127.0.0.1:80", 10000, 5000, 1, 1, std::nullopt},
      {"router", CheckerKind::kPing, "192.168.1.1", 10000, 5000, 1, 1, std::nullopt},
  };
  for (std::size_t i = 0; i < c.checkers.size(); ++i) {
    EXPECT_EQ(c.checkers[i], expected[i]) << c.checkers[i].name;
  }

  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/farm", "mlost_count"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/check/ping[2]/to", "addr=\"R2\""));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/check/intf", "local_addr"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/check/custom", "long-running"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated,
                       "/safe/service/vip/interface_list/interface/virtual_interface/"
                       "virtual_addr[2]",
                       "its own"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service/vip/interface_list/interface",
                       "arpinterval"));
  // What could not be mapped is offered, commented out, to adapt by hand.
  EXPECT_NE(r.toml.find("# target = \"mychecker\""), std::string::npos) << r.toml;
  EXPECT_NE(r.toml.find("# target = \"R2\""), std::string::npos) << r.toml;
  EXPECT_NE(r.toml.find("# garp_interval = 30"), std::string::npos) << r.toml;
  EXPECT_NE(r.toml.find("# garp_duration = 600"), std::string::npos) << r.toml;
}

TEST(SafekitImport, UnmappableThingsAreNotedWithTheirPath) {
  const SafekitImport r = import_fixture("unmappable.xml", "node1");
  const Config c = load(r);
  ASSERT_EQ(c.vips.size(), 1u);
  EXPECT_EQ(c.vips[0].address, ip("10.1.0.126"));
  ASSERT_EQ(c.groups.size(), 1u);
  ASSERT_EQ(c.groups[0].rules.size(), 1u) << "the arp rule is left out";
  EXPECT_EQ(c.groups[0].rules[0].ports, (std::vector<PortRange>{{9010, 9010}}));
  EXPECT_EQ(c.groups[0].rules[0].key, KeyKind::kOnPort);
  EXPECT_TRUE(c.checkers.empty());

  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/heart", "mirror"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/rfs", "replication"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/user", "SERVICES"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/errd", "process monitor"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/failover", "failover rules"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/check/module", "module checker"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/loadbalancing_list/group/rule[1]",
                       "proto=\"arp\""));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip", "tcpreset"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service/vip", "vipfarmctl start"));
  EXPECT_TRUE(has_note(r, Kind::kApproximated,
                       "/safe/service/vip/interface_list/interface/virtual_interface",
                       "l2_mode = \"directed\""));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/bogus", "unknown element <bogus>"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/loadbalancing_list/group",
                       "unknown attribute colour=\"blue\""));
  // The note names the line of the element, as the XML file has it.
  const std::string xml = fixture("unmappable.xml");
  std::uint32_t bogus_line = 1;
  for (std::size_t i = 0; i < xml.find("<bogus/>"); ++i) bogus_line += xml[i] == '\n';
  for (const SafekitNote& n : r.notes) {
    if (n.path == "/safe/service/vip/bogus") {
      EXPECT_EQ(n.line, bogus_line);
      EXPECT_EQ(n.to_string().rfind("unmappable.xml:" + std::to_string(bogus_line) + ": ", 0), 0u)
          << n.to_string();
    }
  }
  EXPECT_NE(r.toml.find("systemctl is-active --quiet nginx"), std::string::npos) << r.toml;
}

// A hostile userconfig.xml: the attributes that reach the TOML carry encoded newlines
// (pugixml decodes &#10; and &#13;) followed by a live [[checker]] kind = "custom", and the
// file name has one too. The output must parse to exactly the config intended: the one tcp
// checker, while the intf and custom checkers and every note stay comments.
TEST(SafekitImport, EncodedNewlinesNeverBecomeLiveToml) {
  const std::string inject =
      "&#10;[[checker]]&#10;name = &quot;pwn&quot;&#10;kind = &quot;custom&quot;&#10;"
      "target = &quot;touch /tmp/pwned&quot;&#13;&#10;";
  const std::string xml = legacy_farm(
      std::string(kVip) + "<check><intf ident=\"i" + inject + "\"><to local_addr=\"10.0.0.1" +
      inject + "\"/></intf><custom ident=\"c" + inject + "\" exec=\"/bin/true" + inject +
      "\" arg=\"x" + inject + "\"/><tcp ident=\"t\" when=\"pre" + inject +
      "\"><to addr=\"127.0.0.1\" port=\"80\"/></tcp></check><bogus colour=\"blue" + inject +
      "\"/>");
  const SafekitImport r = import_safekit(xml, "evil\n[[checker]].xml");
  const Config c = load(r);
  ASSERT_EQ(c.checkers.size(), 1u) << r.toml;  // the tcp probe, as intended
  EXPECT_EQ(c.checkers[0].name, "t");
  EXPECT_EQ(c.checkers[0].kind, CheckerKind::kTcp);
  EXPECT_EQ(c.checkers[0].target, "127.0.0.1:80");
  // No line but the intended one opens a [[checker]]; "pwn" only in comments and quotes.
  std::istringstream lines(r.toml);
  unsigned tables = 0;
  for (std::string line; std::getline(lines, line);) {
    tables += line.rfind("[[checker]]", 0) == 0 ? 1 : 0;
    if (line.rfind('#', 0) != 0 && line.find('"') == std::string::npos) {
      EXPECT_EQ(line.find("pwn"), std::string::npos) << "live line: " << line;
    }
    EXPECT_EQ(line.find('\r'), std::string::npos) << "a carriage return in: " << line;
  }
  EXPECT_EQ(tables, 1u) << r.toml;
  EXPECT_NE(r.toml.find("\\u000a[[checker]]"), std::string::npos) << r.toml;
}

// A file in Latin-1 (pugixml reads bytes as UTF-8, found by fuzz_safekit): every byte that
// is not UTF-8 reaches the TOML as its Latin-1 character, escaped, so the TOML still loads.
TEST(SafekitImport, BytesThatAreNotUtf8ReadAsLatin1) {
  const std::string vip =
      "<vip><interface_list><interface check=\"off\">"
      "<virtual_interface type=\"vmac_invisible\">"
      "<virtual_addr addr=\"198.51.100.50\" check=\"off\"/>"
      "</virtual_interface></interface></interface_list>"
      "<loadbalancing_list><group name=\"caf\xe9\"><rule port=\"80\" proto=\"tcp\" "
      "filter=\"on_addr\" colour=\"bl\xe9u\"/></group></loadbalancing_list></vip>";
  const SafekitImport r = import_safekit(legacy_farm(vip), "latin1.xml");
  const Config c = load(r);
  ASSERT_EQ(c.groups.size(), 1u) << r.toml;
  EXPECT_EQ(c.groups[0].name, "caf\xc3\xa9");                         // é
  EXPECT_NE(r.toml.find("bl\\u00e9u"), std::string::npos) << r.toml;  // in a note
}

TEST(SafekitImport, MalformedXmlNamesThePosition) {
  const std::string bad = "<safe>\n<service mode=\"farm\">\n  <vip></vipx>\n</service></safe>\n";
  const SafekitImport r = import_safekit(bad, "bad.xml");
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(r.toml.empty());
  EXPECT_EQ(r.error->line, 3u);
  EXPECT_GT(r.error->column, 0u);
  EXPECT_NE(r.error->message.find("malformed XML"), std::string::npos) << r.error->message;
  EXPECT_EQ(r.error->to_string().rfind("bad.xml:3:", 0), 0u) << r.error->to_string();

  const SafekitImport empty = import_safekit("", "empty.xml");
  ASSERT_TRUE(empty.error.has_value());
  EXPECT_NE(empty.error->message.find("malformed XML"), std::string::npos);

  const SafekitImport cluster =
      import_safekit(fixture("web_farm.xml"), "web_farm.xml",
                     {.cluster_xml = "<cluster>\n<lans>\n<lan name=\"default\">\n<node name=\"x\"",
                      .cluster_xml_source = "c.xml"});
  ASSERT_TRUE(cluster.error.has_value());
  EXPECT_EQ(cluster.error->file, "c.xml");
  EXPECT_EQ(cluster.error->line, 4u) << cluster.error->to_string();
}

TEST(SafekitImport, OnlyFarmModulesAreImported) {
  const SafekitImport mirror = import_safekit(
      "<safe>\n<service mode=\"mirror\"><heart><heartbeat name=\"default\"/></heart></service>"
      "</safe>",
      "mirror.xml");
  ASSERT_TRUE(mirror.error.has_value());
  EXPECT_EQ(mirror.error->path, "/safe/service");
  EXPECT_EQ(mirror.error->line, 2u);
  EXPECT_NE(mirror.error->message.find("mode=\"mirror\""), std::string::npos);

  const SafekitImport other = import_safekit("<config/>", "other.xml");
  ASSERT_TRUE(other.error.has_value());
  EXPECT_NE(other.error->message.find("no <safe>"), std::string::npos);
}

TEST(SafekitImport, NodeSelection) {
  const SafekitImport first = import_fixture("web_farm.xml");
  EXPECT_EQ(load(first).node_id, NodeId{1});
  EXPECT_TRUE(has_note(first, Kind::kTodo, "", "no node chosen"));

  const SafekitImport third = import_fixture("web_farm.xml", "node3");
  const Config c = load(third);
  EXPECT_EQ(c.node_id, NodeId{3});
  EXPECT_EQ(c.node_name, "node3");
  for (const SafekitNote& n : third.notes) {
    EXPECT_EQ(n.message.find("no node chosen"), std::string::npos) << n.to_string();
  }

  const SafekitImport missing = import_fixture("web_farm.xml", "node9");
  ASSERT_TRUE(missing.error.has_value());
  EXPECT_NE(missing.error->message.find("no node \"node9\""), std::string::npos);
  EXPECT_NE(missing.error->message.find("node1, node2, node3"), std::string::npos);
}

TEST(SafekitImport, NodesOnTheSameFarmDifferOnlyInNode) {
  const Config one = load(import_fixture("power.xml", "node1"));
  const Config two = load(import_fixture("power.xml", "node2"));
  EXPECT_EQ(fingerprint(one), fingerprint(two)) << "every node must be able to join the farm";
}

TEST(SafekitImport, NewSyntaxNeedsTheClusterXml) {
  const SafekitImport r = import_fixture("web_farm.xml", "", "");
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->path, "/safe/service/farm/lan");
  EXPECT_NE(r.error->message.find("cluster.xml"), std::string::npos) << r.error->to_string();

  const SafekitImport other_lan = import_safekit(
      fixture("web_farm.xml"), "web_farm.xml",
      {.cluster_xml = "<cluster><lans><lan name=\"office\"><node name=\"n\" addr=\"192.0.2.9\"/>"
                      "</lan></lans></cluster>"});
  ASSERT_TRUE(other_lan.error.has_value());
  EXPECT_NE(other_lan.error->message.find("not a network of"), std::string::npos);
}

TEST(SafekitImport, SecondNetworkFromTheClusterXml) {
  const std::string xml =
      "<safe><service mode=\"farm\"><farm><lan name=\"default\"/><lan name=\"repli\"/></farm>" +
      std::string(kVip) + "</service></safe>";
  const SafekitImport r =
      import_safekit(xml, "/opt/safekit/modules/web/conf/userconfig.xml",
                     {.node = "node1", .cluster_xml = fixture("cluster_two_lans.xml")});
  const Config c = load(r);
  EXPECT_EQ(c.cluster_name, "web") << "the module's directory";
  EXPECT_EQ(c.nodes[1].address, ip("192.168.1.68"));
  ASSERT_EQ(c.membership.lans.size(), 1u);
  EXPECT_EQ(c.membership.lans[0].name, "repli");
  EXPECT_EQ(*c.membership.lans[0].find(NodeId{2}), ip("10.0.0.2"));
}

TEST(SafekitImport, HostnamesAreNotResolved) {
  const std::string xml =
      "<safe><service mode=\"farm\"><farm><lan name=\"default\">"
      "<node name=\"a\" addr=\"server1.example\"/></lan></farm>" +
      std::string(kVip) + "</service></safe>";
  const SafekitImport r = import_safekit(xml, "names.xml");
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->path, "/safe/service/farm/lan/node");
  EXPECT_NE(r.error->message.find("not an IP address"), std::string::npos);
}

TEST(SafekitImport, MacrosAndTimeUnits) {
  const std::string xml =
      "<macro name=\"VIP\" value=\"198.51.100.60\"/>" +
      legacy_farm(
          "<vip><interface_list><interface check=\"off\"><virtual_interface "
          "type=\"vmac_invisible\"><virtual_addr addr=\"%VIP%\" check=\"off\"/>"
          "</virtual_interface></interface></interface_list><loadbalancing_list><group "
          "name=\"g\"><rule port=\"%PORT%\" proto=\"tcp\" filter=\"on_addr\"/><rule port=\"81\" "
          "proto=\"tcp\" filter=\"on_port\"/></group></loadbalancing_list></vip>"
          "<check><ping ident=\"gw\" when=\"pre\"><to addr=\"192.0.2.254\" interval=\"1m\" "
          "timeout=\"3\"/></ping></check>",
          " pulse=\"50\"");
  const SafekitImport r = import_safekit(xml, "macros.xml", {.node = "b"});
  const Config c = load(r);
  ASSERT_EQ(c.vips.size(), 1u);
  EXPECT_EQ(c.vips[0].address, ip("198.51.100.60"));
  EXPECT_EQ(c.membership.interval_ms, 50u) << "pulse is in milliseconds without a unit";
  ASSERT_EQ(c.checkers.size(), 1u);
  EXPECT_EQ(c.checkers[0].interval_ms, 60000u);
  EXPECT_EQ(c.checkers[0].timeout_ms, 3000u) << "timeout is in seconds without a unit";
  ASSERT_EQ(c.groups[0].rules.size(), 1u);
  EXPECT_TRUE(has_note(r, Kind::kApproximated, "/safe/service/vip/loadbalancing_list/group/rule[1]",
                       "%PORT%"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/loadbalancing_list/group/rule[1]",
                       "rule left out"));
}

TEST(SafekitImport, GroupsThatCannotCarryTrafficAreLeftOutAndSaid) {
  const std::string xml = legacy_farm(
      "<vip><interface_list><interface check=\"off\"><virtual_interface type=\"vmac_invisible\">"
      "<virtual_addr addr=\"198.51.100.50\" check=\"off\"/></virtual_interface></interface>"
      "</interface_list><loadbalancing_list>"
      "<group name=\"idle\"><cluster><host name=\"a\" power=\"0\"/></cluster>"
      "<rule port=\"22\" proto=\"tcp\" filter=\"on_addr\"/></group>"
      "<group name=\"web\"><cluster><host name=\"b\" power=\"2\"/><host name=\"zed\" "
      "power=\"1\"/></cluster><rule virtual_addr=\"198.51.100.99\" port=\"80\" proto=\"tcp\" "
      "filter=\"on_addr\"/><rule port=\"443\" proto=\"tcp\" filter=\"on_addr\"/></group>"
      "</loadbalancing_list></vip>");
  const SafekitImport r = import_safekit(xml, "groups.xml", {.node = "a"});
  const Config c = load(r);
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].name, "web");
  ASSERT_EQ(c.groups[0].members.size(), 1u);
  EXPECT_EQ(c.groups[0].members[0].node, NodeId{2});
  EXPECT_EQ(c.groups[0].members[0].weight, 2u);
  ASSERT_EQ(c.groups[0].rules.size(), 1u);
  EXPECT_EQ(c.groups[0].rules[0].ports, (std::vector<PortRange>{{443, 443}}));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/loadbalancing_list/group[1]",
                       "power above 0"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped,
                       "/safe/service/vip/loadbalancing_list/group[2]/cluster/host[2]",
                       "not a node of the farm"));
  EXPECT_TRUE(has_note(r, Kind::kUnmapped, "/safe/service/vip/loadbalancing_list/group[2]/rule[1]",
                       "not an imported VIP"));

  const SafekitImport none = import_safekit(
      legacy_farm("<vip><interface_list><interface check=\"off\"><virtual_interface>"
                  "<virtual_addr addr=\"198.51.100.50\" check=\"off\"/></virtual_interface>"
                  "</interface></interface_list></vip>"),
      "norules.xml");
  ASSERT_TRUE(none.error.has_value());
  EXPECT_NE(none.error->message.find("no load-balancing rule"), std::string::npos);
  EXPECT_TRUE(has_note(none, Kind::kApproximated,
                       "/safe/service/vip/interface_list/interface/virtual_interface", "no type"))
      << "the notes found before the error are kept";
}

}  // namespace
}  // namespace vipfarm::config
