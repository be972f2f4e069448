import ArgumentParser
import Foundation
import RecServeModels

/// `recserve gen-data`: synthetic ratings with planted low-rank structure.
struct GenDataCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gen-data",
    abstract: "Write synthetic ratings with planted structure as CSV.",
    discussion: """
      Ratings come from a hidden low-rank model (latent user and item clusters, biases, noise, \
      popularity skew), rounded to half stars in 0.5...5, with timestamps. The file is \
      user_id,item_id,rating,timestamp with ids u1..uU and i1..iI; the same seed gives the same \
      file.
      """)

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
      let config = SyntheticData.Config(
        users: users, items: items, seed: seed, dim: dim, density: density)
      let data = try SyntheticData.write(config, to: out)
      print(
        "wrote \(data.count) ratings (\(data.userCount) users, \(data.itemCount) items) to \(out)")
    } catch {
      throw CLI.failure(error)
    }
  }
}
