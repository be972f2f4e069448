import ArgumentParser
import Foundation
import RecServeModels

/// `recserve gen-data`: synthetic ratings with planted low-rank structure.
struct GenDataCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gen-data",
    abstract: "Write synthetic interactions with planted structure as CSV.",
    discussion: """
      --kind ratings (default): ratings from a hidden low-rank model (latent user and item \
      clusters, biases, noise, popularity skew), rounded to half stars in 0.5...5, with \
      timestamps. --kind sequences: implicit feedback (rating 1) with planted sequential \
      structure for sequence models: the items form chains of --chain-length consecutive ids \
      (i1..iC, then iC+1..i2C, ...) and every user walks chains forward from random starting \
      points, an event in --noise of the cases being a random item instead. The file is \
      user_id,item_id,rating,timestamp with ids u1..uU and i1..iI; the same seed gives the same \
      file. --kind catalog: implicit feedback plus item features for the hybrid model: each item \
      has a genre and a title (written to --features-out as item_id,title,genres), each user a \
      favourite genre most interactions come from, and the last --new-items share of the items \
      has no interactions (only their features place them).
      """)

  @Option(help: "ratings, sequences or catalog.")
  var kind: String = "ratings"

  @Option(name: .customLong("features-out"), help: "catalog: the item feature file to write.")
  var featuresOut: String?

  @Option(name: .customLong("new-items"), help: "catalog: share of the items nobody touched.")
  var newItems: Double = 0.1

  @Option(name: .customLong("per-user"), help: "catalog: interactions per user.")
  var perUser: Int = 20

  @Option(name: .customLong("chain-length"), help: "sequences: items per chain.")
  var chainLength: Int = 20

  @Option(help: "sequences: fraction of events that are a random item.")
  var noise: Double = 0.05

  @Option(help: "sequences: events per user, as MIN-MAX.")
  var events: String = "20-40"

  @Option(help: "Number of users.")
  var users: Int

  @Option(help: "Number of items.")
  var items: Int

  @Option(help: "Output CSV file.")
  var out: String

  @Option(help: "Random seed.")
  var seed: UInt64 = 1

  @Option(help: "Rank of the hidden model.")
  var dim: Int = 8

  @Option(help: "Fraction of user-item pairs that are rated (on average).")
  var density: Double = 0.05

  func run() throws {
    do {
      if users < 1 { throw ValidationError("--users must be at least 1") }
      if items < 1 { throw ValidationError("--items must be at least 1") }
      if dim < 1 || dim > 1024 { throw ValidationError("--dim must be in 1...1024") }
      if !(density > 0 && density <= 1) { throw ValidationError("--density must be in (0, 1]") }
      if kind == "sequences" {
        let parts = events.split(separator: "-").map { Int($0) }
        guard parts.count == 2, let lo = parts[0], let hi = parts[1], lo >= 1, hi >= lo else {
          throw ValidationError("--events must be MIN-MAX with 1 <= MIN <= MAX (got '\(events)')")
        }
        let config = SyntheticSequences.Config(
          users: users, items: items, seed: seed, chainLength: chainLength, events: lo...hi,
          noise: noise)
        let data = try SyntheticSequences.generate(config)
        try data.writeCSV(to: out)
        print(
          "wrote \(data.count) interactions (\(data.userCount) users, \(data.itemCount) items, chains of \(chainLength)) to \(out)"
        )
        return
      }
      if kind == "catalog" {
        try writeCatalog()
        return
      }
      guard kind == "ratings" else {
        throw ValidationError("unknown --kind '\(kind)' (expected ratings, sequences or catalog)")
      }
      let config = SyntheticData.Config(
        users: users, items: items, seed: seed, dim: dim, density: density)
      let data = try SyntheticData.write(config, to: out)
      print(
        "wrote \(data.count) ratings (\(data.userCount) users, \(data.itemCount) items) to \(out)")
    } catch {
      throw CLI.failure(error)
    }
  }

  /// `--kind catalog`: the interactions to --out, the item features to --features-out.
  private func writeCatalog() throws {
    guard let featuresOut else {
      throw ValidationError("--kind catalog needs --features-out FILE for the item features")
    }
    let catalog = try SyntheticCatalog.generate(
      SyntheticCatalog.Config(
        users: users, items: items, seed: seed, perUser: perUser, newItems: newItems))
    try catalog.interactions.writeCSV(to: out)
    do {
      try catalog.featuresCSV.write(toFile: featuresOut, atomically: true, encoding: .utf8)
    } catch {
      throw CLIError("cannot write \(featuresOut): \(error.localizedDescription)")
    }
    print(
      "wrote \(catalog.interactions.count) interactions (\(catalog.interactions.userCount) users, \(catalog.interactions.itemCount) items) to \(out) and \(items) items' features (\(catalog.newItemIds.count) without interactions) to \(featuresOut)"
    )
  }
}
