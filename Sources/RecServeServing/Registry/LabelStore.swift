import Foundation

/// Labels of a model (`stable`, `canary`, any name → version), kept in `labels.json` beside the
/// versions and written atomically (temporary file, fsync, rename).
public enum LabelStore {
  public static let fileName = "labels.json"

  /// The labels in `<modelDirectory>/labels.json`; none when the file is missing or unreadable.
  public static func read(modelDirectory: String) -> [String: Int64] {
    let path = (modelDirectory as NSString).appendingPathComponent(fileName)
    guard let data = FileManager.default.contents(atPath: path),
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return [:] }
    let labels = (object["labels"] as? [String: Any]) ?? object
    var result: [String: Int64] = [:]
    for (key, value) in labels {
      if let number = value as? NSNumber, number.int64Value > 0 { result[key] = number.int64Value }
    }
    return result
  }
}
