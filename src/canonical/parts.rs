//! The content of a chat message, typed: the one reading of OpenAI's `content` (a string,
//! or an array of parts) that every translating provider maps from, and the one image
//! model (an inline `data:` URL or a URL to fetch) the translations share in both
//! directions. A part type no provider translation carries is refused here, once, in one
//! wording.

use crate::canonical::anthropic::{Block, ImageSource};
use crate::canonical::chat_write::ContentPart;
use crate::errors::GatewayError;
use serde_json::Value;

/// A message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Content<'a> {
    /// `null` or absent.
    None,
    /// A plain string (possibly empty: providers differ in what they do with one).
    Text(&'a str),
    /// An array of parts, in order.
    Parts(Vec<Part<'a>>),
}

/// One part of an array content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part<'a> {
    /// A `text` part (`None`: its `text` is not a string).
    Text(Option<&'a str>),
    /// An `image_url` part.
    Image(Image<'a>),
}

/// An image, as every API carries one.
#[derive(Debug, Clone, PartialEq)]
pub enum Image<'a> {
    /// A `data:<media type>;base64,<data>` URL.
    Inline { media_type: &'a str, data: &'a str },
    /// A URL the provider fetches itself (`https://`, Gemini's `gs://`, …).
    Url(&'a str),
}

impl<'a> Image<'a> {
    /// The image an OpenAI `image_url.url` names.
    pub fn from_url(url: &'a str) -> Image<'a> {
        match url
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
        {
            Some((media_type, data)) => Image::Inline { media_type, data },
            None => Image::Url(url),
        }
    }

    /// The image of an Anthropic image block's `source` (`base64` or `url`).
    pub fn from_anthropic(source: &'a Value) -> Result<Image<'a>, GatewayError> {
        match source["type"].as_str() {
            Some("base64") => Ok(Image::Inline {
                media_type: source["media_type"].as_str().unwrap_or("image/png"),
                data: source["data"].as_str().unwrap_or_default(),
            }),
            Some("url") => Ok(Image::Url(source["url"].as_str().unwrap_or_default())),
            other => Err(GatewayError::bad_request(
                format!("image source type {other:?} is not supported"),
                Some("messages"),
            )),
        }
    }

    /// As an OpenAI `image_url` content part.
    pub fn openai_part(&self) -> ContentPart {
        let url = match self {
            Image::Inline { media_type, data } => format!("data:{media_type};base64,{data}"),
            Image::Url(url) => url.to_string(),
        };
        ContentPart::image(url, None)
    }

    /// As an Anthropic image block.
    pub fn anthropic_block(&self) -> Block<'a> {
        let source = match *self {
            Image::Inline { media_type, data } => ImageSource::Base64 {
                media_type: media_type.into(),
                data: data.into(),
            },
            Image::Url(url) => ImageSource::Url { url: url.into() },
        };
        Block::Image { source }
    }
}

/// Read an OpenAI message `content`.
pub fn content(content: &Value) -> Result<Content<'_>, GatewayError> {
    let parts = match content {
        Value::Null => return Ok(Content::None),
        Value::String(s) => return Ok(Content::Text(s)),
        Value::Array(parts) => parts,
        _ => {
            return Err(GatewayError::bad_request(
                "message content must be a string or an array",
                Some("messages"),
            ))
        }
    };
    parts
        .iter()
        .map(|p| match p["type"].as_str() {
            Some("text") => Ok(Part::Text(p["text"].as_str())),
            Some("image_url") => Ok(Part::Image(Image::from_url(
                p["image_url"]["url"].as_str().unwrap_or_default(),
            ))),
            other => Err(GatewayError::bad_request(
                format!(
                    "content part type {:?} is not supported for this model",
                    other.unwrap_or_default()
                ),
                Some("messages"),
            )),
        })
        .collect::<Result<_, _>>()
        .map(Content::Parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_parts_and_images_are_read_once() {
        assert_eq!(content(&Value::Null).unwrap(), Content::None);
        assert_eq!(content(&json!("hi")).unwrap(), Content::Text("hi"));
        let c = json!([{"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}]);
        assert_eq!(
            content(&c).unwrap(),
            Content::Parts(vec![
                Part::Text(Some("look")),
                Part::Image(Image::Inline {
                    media_type: "image/png",
                    data: "AAAA"
                }),
                Part::Image(Image::Url("https://x/y.jpg")),
            ])
        );
    }

    #[test]
    fn other_parts_and_shapes_are_refused_in_one_wording() {
        let e = content(&json!([{"type": "input_audio"}])).unwrap_err();
        assert!(
            e.to_string().contains("\"input_audio\" is not supported"),
            "{e}"
        );
        assert_eq!(e.status(), 400);
        assert!(content(&json!(7)).is_err());
    }

    #[test]
    fn images_round_trip_between_the_apis() {
        let source = json!({"type": "base64", "media_type": "image/gif", "data": "R0lG"});
        let image = Image::from_anthropic(&source).unwrap();
        let part = serde_json::to_value(image.openai_part()).unwrap();
        assert_eq!(part["image_url"]["url"], "data:image/gif;base64,R0lG");
        let back = Image::from_url(part["image_url"]["url"].as_str().unwrap());
        let block = serde_json::to_value(back.anthropic_block()).unwrap();
        assert_eq!(block["source"], source);
        assert!(Image::from_anthropic(&json!({"type": "file"})).is_err());
    }
}
