import Foundation
import Testing

@testable import RecServeModels

/// Issue 8, done-when 2: a SASRec with fixed weights, exported from PyTorch by
/// Scripts/export_sasrec.py (the fixture is committed; Scripts/make_sasrec_fixture.py made it
/// with torch), scores every case of `expected.json` as PyTorch did, within 1e-4.
@Suite struct SASRecParityTests {
  static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/sasrec-parity")

  struct Case: Decodable {
    var name: String
    var recent_items: [String]
    var user_id: String?
    var scores: [Float]
    var top: [String]
  }

  struct Expected: Decodable {
    var items: [String]
    var cases: [Case]
  }

  @Test func forwardPassMatchesPyTorch() throws {
    let expected = try JSONDecoder().decode(
      Expected.self, from: Data(contentsOf: Self.fixture.appendingPathComponent("expected.json")))
    let loaded = try ModelStore.load(
      versionDirectory: Self.fixture.appendingPathComponent("models/parity/1").path)
    let model = try #require(loaded.model as? SASRecModel)
    #expect(model.itemIds == expected.items)
    #expect(expected.cases.count >= 8)
    for c in expected.cases {
      // From the session's items (what Rank does with recent_items)...
      var scores = try #require(
        queryScores(model, recent: c.recent_items.map { model.itemIndex($0)! }))
      let worst = zip(scores, c.scores).map { abs($0 - $1) }.max()!
      #expect(worst < 1e-4, "\(c.name): largest difference \(worst)")
      let order = scores.indices.sorted { scores[$0] > scores[$1] }.map { model.itemIds[$0] }
      #expect(order == c.top, "\(c.name)")
      // ...and, for a user, from the state computed when the version loaded.
      if let user = c.user_id {
        let u = try #require(model.userIndex(user))
        model.scoreAll(user: u, into: &scores)
        let worstUser = zip(scores, c.scores).map { abs($0 - $1) }.max()!
        #expect(worstUser < 1e-4, "\(c.name) by user: largest difference \(worstUser)")
      }
    }
  }
}
