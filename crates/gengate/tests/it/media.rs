//! The sandbox's video as a player sees it: a real H.264 MP4, served with
//! byte ranges so browsers can seek.

use std::io::Cursor;

use crate::harness::{Backend, TestApp};
use serde_json::json;

on_both_backends!(the_video_is_an_h264_mp4_of_five_seconds_served_with_ranges,);

async fn the_video_is_an_h264_mp4_of_five_seconds_served_with_ranges(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (_, v) = gw
        .post(
            "/luma/generations",
            &gw.admin,
            json!({"user_prompt": "ocean", "aspect_ratio": "21:9"}),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let t = gw.wait_luma(&gw.admin, &id).await;
    let url = t["video"]["url"].as_str().unwrap().to_string();
    let (_, _, bytes) = gw.bytes(&url).await;

    let size = bytes.len() as u64;
    let mp4 = mp4::Mp4Reader::read_header(Cursor::new(&bytes), size).expect("a valid MP4");
    let (_, track) = mp4
        .tracks()
        .iter()
        .find(|(_, t)| t.track_type().ok() == Some(mp4::TrackType::Video))
        .expect("a video track");
    assert_eq!(track.media_type().unwrap(), mp4::MediaType::H264);
    assert_eq!((track.width(), track.height()), (672, 288));
    assert_eq!(track.frame_rate().round(), 24.0);
    let secs = track.duration().as_secs_f64();
    assert!((secs - 5.0).abs() < 0.05, "duration {secs}");
    assert_eq!(track.sample_count(), 120);
    assert_eq!(t["video_raw"]["duration"], 5.0);
    assert_eq!(
        (t["video"]["width"].as_u64(), t["video"]["height"].as_u64()),
        (Some(672), Some(288))
    );
    // The index comes first, so playback starts without reading the end.
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat);

    // Byte ranges, as a seeking browser asks for them.
    let resp = gw
        .http
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"),
        "results are content-addressed"
    );
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000-1999/{size}")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[1000..2000]);

    // A result is stored under the hash of its bytes.
    use sha2::Digest as _;
    assert!(url.ends_with(&format!(
        "{}.mp4",
        hex::encode(sha2::Sha256::digest(&bytes))
    )));
    let (s, _, _) = gw
        .bytes(&format!("{}/files/results/{}.mp4", gw.base, "0".repeat(64)))
        .await;
    assert_eq!(s, 404);
    // Files outside the media root are not reachable.
    let (s, _, _) = gw.bytes(&format!("{}/files/../gengate.db", gw.base)).await;
    assert!(s == 404 || s == 400, "{s}");
    let (s, _, _) = gw
        .bytes(&format!("{}/files/%2e%2e/gengate.db", gw.base))
        .await;
    assert!(s == 404 || s == 400, "{s}");
    gw.stop().await;
}
