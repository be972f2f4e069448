import ArgumentParser
import Foundation
import RecServeModels
import RecServeProto

extension ModelsCommand {
  /// `recserve models add-items NAME FILE`: ModelAdmin.AddItems from a feature file.
  struct AddItems: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "add-items",
      abstract: "Add items to a serving hybrid version by their features, without retraining.",
      discussion: """
        FILE is a feature file like the one the version was trained with (CSV with a header whose \
        first column is the item id; columns the model does not know are refused). Items are sent \
        in calls of at most --batch items; each call is all or nothing, and items added before \
        with the same features are skipped, so a failed run can simply be repeated.
        """)

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "Feature file of the new items.")
    var file: String

    @Option(help: "The version to add to (default: the one that serves).")
    var version: Int64?

    @Option(help: "The label whose version to add to.")
    var label: String?

    @Option(help: "Items per AddItems call, 1...10000.")
    var batch: Int = 1000

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      if let version { try validateVersion(version) }
      if version != nil && label != nil {
        throw ValidationError("give --version or --label, not both")
      }
      guard (1...HybridAdditions.maxItemsPerCall).contains(batch) else {
        throw ValidationError("--batch must be in 1...\(HybridAdditions.maxItemsPerCall)")
      }
    }

    func run() throws {
      let items: [HybridAdditions.NewItem]
      do {
        items = try HybridAdditions.items(fromFeatureFile: file)
      } catch {
        throw CLI.failure(error)
      }
      let client = AdminClient(options: options)
      var added = 0
      var already = 0
      var unmatched: [String] = []
      var last = Recserve_V1_AddItemsResponse()
      for start in stride(from: 0, to: items.count, by: batch) {
        var request = Recserve_V1_AddItemsRequest()
        request.model.name = name
        if let version { request.model.version = version }
        if let label { request.model.label = label }
        request.items = items[start..<min(items.count, start + batch)].map { item in
          var new = Recserve_V1_NewItem()
          new.id = item.id
          new.features = item.features
          return new
        }
        last = try client.call("AddItems", request, as: Recserve_V1_AddItemsResponse.self)
        added += Int(last.added)
        already += last.alreadyPresent.count
        unmatched += last.withoutKnownFeatures
      }
      if options.json { return try client.printJSON(last) }
      print(
        "\(name) version \(last.modelVersion): added \(added) items (\(already) were there already); \(last.itemCount) items now"
      )
      if !unmatched.isEmpty {
        print(
          "  \(unmatched.count) matched no feature the model knows (they score 0): \(unmatched.prefix(5).joined(separator: ", "))\(unmatched.count > 5 ? ", ..." : "")"
        )
      }
    }
  }
}
